# `cmake --build build -t format` rewrites the sources with clang-format;
# `cmake --build build -t format-check` fails when any file is not formatted (CI runs it).
find_program(CLANG_FORMAT NAMES clang-format clang-format-14)
if(CLANG_FORMAT)
    # every component directory (CMakeLists.txt's list), so that a new one is checked too
    set(CHESSLENS_FORMAT_GLOBS "")
    foreach(component ${CHESSLENS_COMPONENTS})
        list(APPEND CHESSLENS_FORMAT_GLOBS ${PROJECT_SOURCE_DIR}/${component}/*.[ch]
            ${PROJECT_SOURCE_DIR}/${component}/*.cu)
    endforeach()
    file(GLOB_RECURSE CHESSLENS_FORMAT_SOURCES CONFIGURE_DEPENDS ${CHESSLENS_FORMAT_GLOBS})
    add_custom_target(format
        COMMAND ${CLANG_FORMAT} -i ${CHESSLENS_FORMAT_SOURCES}
        COMMENT "clang-format: rewriting sources")
    add_custom_target(format-check
        COMMAND ${CLANG_FORMAT} --dry-run --Werror ${CHESSLENS_FORMAT_SOURCES}
        COMMENT "clang-format: checking sources")
endif()
