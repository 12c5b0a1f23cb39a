// store-contract.test.mjs - the store contract suite (store-contract-suite.mjs) on SQLite and DynamoDB:
// the checks of users, plans, credits, projects, events, the daily bonus, billing and the races; the
// DynamoDB table's one definition; `koumpa migrate` with KOUMPA_DB=dynamodb creates the table, and the
// DynamoDB backend lacks no store operation (kp_store_missing_op; serve refuses a backend that does).
import { storeContract } from './store-contract-suite.mjs';

storeContract(['migrate', 'plans', 'users', 'verify', 'projects', 'credits', 'bonus', 'billing', 'events', 'race'],
  { cli: true });
