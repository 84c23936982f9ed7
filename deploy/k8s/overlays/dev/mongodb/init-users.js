// The MongoDB users, one per service with readWrite on its own database only, plus `backup`
// (mongodump) and the administrator `admin`; passwords from the environment (the services'
// URIs, so that a URI and its user cannot disagree). Also makes the server a one-member
// replica set. Idempotent: run at every start of the server (the dev overlay's postStart hook,
// on localhost: the first user comes through MongoDB's localhost exception) or against a
// server whose `admin` exists (compose's one-shot mongodb-init), and a changed password is
// set again (rotation).
const admin = db.getSiblingDB('admin');
const adminPassword = process.env.MONGODB_ADMIN_PASSWORD;
const deadline = Date.now() + 120000;
for (;;) {
  try {
    db.adminCommand({ping: 1});
    break;
  } catch (e) {
    if (Date.now() > deadline) throw e;
    sleep(500);
  }
}
let authenticated = true;
try {
  admin.auth('admin', adminPassword);
} catch (e) {
  authenticated = false; // no user yet: the localhost exception lets us make the first
}
try {
  rs.status();
} catch (e) {
  if (e.codeName !== 'NotYetInitialized') throw e;
  rs.initiate({_id: 'rs0', members: [{_id: 0, host: process.env.MONGODB_MEMBER}]});
  print('replica set rs0 initialised');
}
while (!db.hello().isWritablePrimary) sleep(500);
if (!authenticated) {
  admin.createUser({user: 'admin', pwd: adminPassword, roles: ['root']});
  admin.auth('admin', adminPassword);
}
// variable holding the user's URI -> its roles. A service's user reads and writes its own
// database (migrations: its indexes) and nothing else.
const users = {
  USERS_MONGODB_URI: [{role: 'readWrite', db: 'promo_users'}],
  PROMOCODES_MONGODB_URI: [{role: 'readWrite', db: 'promo_promocodes'}],
  ORDERS_MONGODB_URI: [{role: 'readWrite', db: 'promo_orders'}],
  BACKUP_MONGODB_URI: [{role: 'backup', db: 'admin'}],
};
for (const [variable, roles] of Object.entries(users)) {
  const uri = new URL(process.env[variable]);
  const user = decodeURIComponent(uri.username);
  const pwd = decodeURIComponent(uri.password);
  if (admin.getUser(user) === null) {
    admin.createUser({user, pwd, roles});
    print(`user ${user} created`);
  } else {
    admin.updateUser(user, {pwd, roles});
  }
}
