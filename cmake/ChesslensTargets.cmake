# Helpers that give every component and test the same shape.
#
# chesslens_add_library(NAME SOURCES ... [DEPS ...]): a static library whose include root is the
#   repository root, so its public header is included as "NAME/NAME.h".
# chesslens_add_test(NAME SOURCES ... [LIBS ...] [LABELS ...] [TIMEOUT s]): one cmocka executable
#   registered with ctest. Exit code 77 means skipped (e.g. no GPU, no PyTorch). Tests find the
#   repository through CHESSLENS_SOURCE_DIR and a scratch directory through CHESSLENS_TEST_TMPDIR.
# chesslens_add_fuzz(NAME LIBS ...): a libFuzzer target fuzz_NAME from fuzz_NAME.c in the
#   calling directory (only with CHESSLENS_FUZZ=ON). Its seed corpus lives in corpus/NAME beside
#   it; tests/run-all.sh finds every tests/*/fuzz/corpus/NAME and runs fuzz_NAME on a copy.

function(chesslens_add_library name)
    cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
    add_library(${name} STATIC ${ARG_SOURCES})
    target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
    if(ARG_DEPS)
        target_link_libraries(${name} PUBLIC ${ARG_DEPS})
    endif()
endfunction()

function(chesslens_add_test name)
    cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
    if(NOT ARG_TIMEOUT)
        set(ARG_TIMEOUT 120)
    endif()
    if(NOT ARG_LABELS)
        set(ARG_LABELS unit)
    endif()
    add_executable(${name} ${ARG_SOURCES})
    target_link_libraries(${name} PRIVATE ${ARG_LIBS} PkgConfig::CMOCKA)
    target_compile_definitions(${name} PRIVATE
        CHESSLENS_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
        CHESSLENS_BINARY_DIR="${PROJECT_BINARY_DIR}")
    add_test(NAME ${name} COMMAND ${name})
    set_tests_properties(${name} PROPERTIES
        TIMEOUT ${ARG_TIMEOUT}
        LABELS "${ARG_LABELS}"
        SKIP_RETURN_CODE 77
        ENVIRONMENT "CHESSLENS_TEST_TMPDIR=${PROJECT_BINARY_DIR}/test-tmp/${name}")
    file(MAKE_DIRECTORY ${PROJECT_BINARY_DIR}/test-tmp/${name})
endfunction()

function(chesslens_add_fuzz name)
    cmake_parse_arguments(ARG "" "" "LIBS" ${ARGN})
    add_executable(fuzz_${name} fuzz_${name}.c)
    target_link_libraries(fuzz_${name} PRIVATE ${ARG_LIBS})
    target_compile_options(fuzz_${name} PRIVATE -fsanitize=fuzzer)
    target_link_options(fuzz_${name} PRIVATE -fsanitize=fuzzer)
    target_compile_definitions(fuzz_${name} PRIVATE CHESSLENS_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
endfunction()
