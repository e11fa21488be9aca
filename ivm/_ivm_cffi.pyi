# The cffi extension module built from include/ivm.h (tools/gen_cffi.py).
from typing import Any

ffi: Any
lib: Any
