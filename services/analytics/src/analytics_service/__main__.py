"""`python -m analytics_service`: runs the analytics service until SIGTERM (it owns no schema:
sync-consumer's migrations create the tables it reads)."""

from __future__ import annotations

from analytics_service.bootstrap import build
from analytics_service.config import AnalyticsSettings
from promo_libs.entrypoint import run_service


def main() -> None:
    run_service("analytics_service", "analytics", AnalyticsSettings, build)


if __name__ == "__main__":
    main()
