# `cmake --build build -t format` rewrites the sources with clang-format;
# `cmake --build build -t format-check` fails when any file is not formatted (CI runs it).
find_program(CLANG_FORMAT NAMES clang-format clang-format-14)
if(CLANG_FORMAT)
    file(GLOB_RECURSE CHESSLENS_FORMAT_SOURCES CONFIGURE_DEPENDS
        ${PROJECT_SOURCE_DIR}/common/*.[ch] ${PROJECT_SOURCE_DIR}/chess/*.[ch]
        ${PROJECT_SOURCE_DIR}/model/*.[ch] ${PROJECT_SOURCE_DIR}/interp/*.[ch]
        ${PROJECT_SOURCE_DIR}/gpu/*.[ch] ${PROJECT_SOURCE_DIR}/gpu/*.cu
        ${PROJECT_SOURCE_DIR}/proto/*.[ch] ${PROJECT_SOURCE_DIR}/coordinator/*.[ch]
        ${PROJECT_SOURCE_DIR}/worker/*.[ch] ${PROJECT_SOURCE_DIR}/cli/*.[ch]
        ${PROJECT_SOURCE_DIR}/tests/*.[ch] ${PROJECT_SOURCE_DIR}/bench/*.[ch])
    add_custom_target(format
        COMMAND ${CLANG_FORMAT} -i ${CHESSLENS_FORMAT_SOURCES}
        COMMENT "clang-format: rewriting sources")
    add_custom_target(format-check
        COMMAND ${CLANG_FORMAT} --dry-run --Werror ${CHESSLENS_FORMAT_SOURCES}
        COMMENT "clang-format: checking sources")
endif()
