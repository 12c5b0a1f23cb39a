// verify.test.mjs - the verification screen's hash parsing (src/web/js/views/verify.js): the token
// of '#/verify?token=...' (the default KOUMPA_VERIFY_URL) and of '#/verify?x=y&token=...' /
// '#/verify&token=...' (an explicit KOUMPA_VERIFY_URL with a query of its own gets '&token=').
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { tokenFromHash } from '../../src/web/js/views/verify.js';

test('tokenFromHash finds the token after ? or &', () => {
  assert.equal(tokenFromHash('#/verify?token=abc_DEF-123'), 'abc_DEF-123');
  assert.equal(tokenFromHash('/verify?token=abc'), 'abc');
  assert.equal(tokenFromHash('#/verify?lang=en&token=abc'), 'abc');
  assert.equal(tokenFromHash('#/verify&token=abc'), 'abc');
  assert.equal(tokenFromHash('#/verify?token=a%2Db'), 'a-b');
});

test('tokenFromHash: no token, an empty one or no hash at all is null', () => {
  assert.equal(tokenFromHash('#/verify'), null);
  assert.equal(tokenFromHash('#/verify?token='), null);
  assert.equal(tokenFromHash('#/verify?tokens=abc'), null);
  assert.equal(tokenFromHash(''), null);
  assert.equal(tokenFromHash(undefined), null);
});
