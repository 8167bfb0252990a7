# Compiler settings shared by every target: C11 without extensions, strict warnings as errors,
# sanitizers in Debug, asserts kept in Release (they document invariants and stay on).
set(CMAKE_C_STANDARD 11)
set(CMAKE_C_STANDARD_REQUIRED ON)
set(CMAKE_C_EXTENSIONS OFF)
set(CMAKE_EXPORT_COMPILE_COMMANDS ON)

add_compile_definitions(_POSIX_C_SOURCE=200809L)
add_compile_options(
    "$<$<COMPILE_LANGUAGE:C>:-Wall;-Wextra;-Wpedantic;-Wshadow;-Wstrict-prototypes;-Wmissing-prototypes;-Wformat=2;-Wundef;-Wcast-qual;-Werror>")

# CUDA: every nvcc warning and every host-compiler warning of the .cu files is an error too.
add_compile_options(
    "$<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings;-Xcompiler=-Wall,-Wextra,-Werror>")

# Release: optimised, asserts on (no -DNDEBUG).
set(CMAKE_C_FLAGS_RELEASE "-O3" CACHE STRING "" FORCE)
set(CMAKE_C_FLAGS_DEBUG "-O1 -g -fno-omit-frame-pointer" CACHE STRING "" FORCE)

if(CMAKE_BUILD_TYPE STREQUAL "Debug")
    set(CHESSLENS_SANITIZERS -fsanitize=address,undefined -fno-sanitize-recover=all)
    add_compile_options("$<$<COMPILE_LANGUAGE:C>:${CHESSLENS_SANITIZERS}>")
    add_link_options(${CHESSLENS_SANITIZERS})
endif()

if(CHESSLENS_NATIVE)
    add_compile_options("$<$<COMPILE_LANGUAGE:C>:-march=native>")
endif()

# Fuzz builds: every library gets libFuzzer's coverage instrumentation, so that a target in
# tests/<component>/fuzz sees the branches of the code it feeds (chesslens_add_fuzz links the
# fuzzer's main into the target itself).
if(CHESSLENS_FUZZ)
    if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
        message(FATAL_ERROR "CHESSLENS_FUZZ=ON needs clang (configure with CC=clang)")
    endif()
    add_compile_options("$<$<COMPILE_LANGUAGE:C>:-fsanitize=fuzzer-no-link>")
endif()
