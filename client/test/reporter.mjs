// A quiet reporter for `node --test`: nothing for a passing test, the whole story for a
// failing one, and one summary line at the end ("client: N passed, N failed").
export default async function* reporter(source) {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  for await (const event of source) {
    const data = event.data ?? {};
    const isSuite = data.details?.type === 'suite';
    if (event.type === 'test:pass' && !isSuite) {
      if (data.skip || data.todo) skipped++;
      else passed++;
    } else if (event.type === 'test:fail' && !isSuite) {
      failed++;
      const error = data.details?.error;
      const cause = error?.cause ?? error;
      const text = cause?.stack ?? String(cause);
      yield `not ok: ${data.name} (${data.file ?? '?'}:${data.line ?? '?'})\n  ${String(text).split('\n').join('\n  ')}\n`;
    }
    // Output the tests themselves print (sqlite-wasm logs the errors tests provoke on
    // purpose) is left out: a failure above carries its own error and stack.
  }
  yield `client: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`;
}
