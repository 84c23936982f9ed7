"""ClickHouse access shared by the processes that write or read analytics: client, migrations."""
