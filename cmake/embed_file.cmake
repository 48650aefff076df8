# Writes a C++ source that holds a file's bytes: cmake -DIN=file -DOUT=source.cpp -DSYMBOL=name -P embed_file.cmake
# defines `extern const char SYMBOL[]` (NUL-terminated) and `extern const std::size_t SYMBOL_size`.
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR bytes "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," body "${hex}")
string(REGEX REPLACE "(('\\\\x[0-9a-f][0-9a-f]',){32})" "\\1\n" body "${body}")
file(WRITE "${OUT}" "// Generated from ${IN} by embed_file.cmake: do not edit.\n#include <cstddef>\nextern const char ${SYMBOL}[];\nextern const std::size_t ${SYMBOL}_size;\nconst char ${SYMBOL}[] = {\n${body}'\\0'};\nconst std::size_t ${SYMBOL}_size = ${bytes};\n")
