#!/usr/bin/env bash
# Checks that Windows executables import only DLLs every Windows machine has: no C/C++ runtime
# that needs the Visual C++ Redistributable (vcruntime*, msvcp*, ucrtbase*, api-ms-win-crt-*)
# and no MinGW runtime DLL (libgcc_s*, libwinpthread*, libstdc++*). An MSVC build links its CRT
# statically through .cargo/config.toml (+crt-static); this is what shows it did.
#
#   bash tests/windows-imports.sh EXE...
#
# Uses x86_64-w64-mingw32-objdump (Debian's binutils-mingw-w64-x86-64) or llvm-objdump, which
# read PE files of either toolchain. Prints one ok/not ok line per exe; exits 1 on a failure.
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: tests/windows-imports.sh EXE..." >&2; exit 2; }
OBJDUMP=
for tool in x86_64-w64-mingw32-objdump llvm-objdump; do
  command -v "$tool" >/dev/null && { OBJDUMP=$tool; break; }
done
[ -n "$OBJDUMP" ] || { echo "no x86_64-w64-mingw32-objdump or llvm-objdump on PATH" >&2; exit 2; }
FORBIDDEN='^(vcruntime.*|msvcp.*|ucrtbase.*|api-ms-win-crt-.*|libgcc_s.*|libwinpthread.*|libstdc\+\+.*)\.dll$'
status=0
for exe in "$@"; do
  dlls=$("$OBJDUMP" -p "$exe" | sed -n 's/^[[:space:]]*DLL Name: //p' | tr 'A-Z' 'a-z' | sort -u)
  if [ -z "$dlls" ]; then
    echo "not ok - $exe: no import table found"; status=1; continue
  fi
  bad=$(grep -E "$FORBIDDEN" <<<"$dlls" || true)
  if [ -n "$bad" ]; then
    echo "not ok - $exe imports runtime DLLs a clean Windows lacks: $(tr '\n' ' ' <<<"$bad")"; status=1
  else
    echo "ok - $(basename "$exe") imports only system DLLs ($(wc -l <<<"$dlls") DLLs)"
  fi
done
exit "$status"
