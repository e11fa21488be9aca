/* ivm.h must compile on its own as strict C99 (-std=c99 -Wall -Wextra -pedantic -Werror):
 * built by `meson test` (header-c99). */
#include "ivm.h"

int ivm_header_c99_check(void);
int ivm_header_c99_check(void) { return IVM_VERSION_NUMBER > 0 || IVM_VERSION_MAJOR == 0; }
