/* check.h — the CHECK macro of the C test programs and their tally. Each
 * program includes it once and ends with report(). */
#ifndef IVM_TEST_CHECK_H
#define IVM_TEST_CHECK_H

#include <stdio.h>

static int passed, failed;

#define CHECK(cond)                                                             \
  do {                                                                          \
    if (cond) {                                                                 \
      passed++;                                                                 \
    } else {                                                                    \
      failed++;                                                                 \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                           \
  } while (0)

/* Prints the tally; the program's exit status. */
static int report(void) {
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}

#endif
