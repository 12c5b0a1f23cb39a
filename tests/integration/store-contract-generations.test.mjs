// store-contract-generations.test.mjs - the store contract suite (store-contract-suite.mjs) on SQLite
// and DynamoDB: generations (recovery's reads, admission, version_end, leases, 15 admissions at once).
import { storeContract } from './store-contract-suite.mjs';

storeContract(['migrate', 'recovery', 'admit', 'admit_race'], { prefixTag: 'gen' });
