# Dependencies, found the standard way and never vendored. A missing one stops the configure
# step with the Debian package that provides it (deploy/install-deps.sh installs them all).
find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
    message(FATAL_ERROR "pkg-config not found: apt-get install pkg-config (or run deploy/install-deps.sh)")
endif()

function(chesslens_require_pkg prefix module debian_package)
    pkg_check_modules(${prefix} QUIET IMPORTED_TARGET GLOBAL ${module})
    if(NOT ${prefix}_FOUND)
        message(FATAL_ERROR "${module} not found: apt-get install ${debian_package} (or run deploy/install-deps.sh)")
    endif()
endfunction()

chesslens_require_pkg(OPENBLAS openblas libopenblas-dev)
chesslens_require_pkg(JANSSON jansson libjansson-dev)
chesslens_require_pkg(CMOCKA cmocka libcmocka-dev)
if(NOT CHESSLENS_ENGINE_ONLY) # the service's libraries
    chesslens_require_pkg(ZMQ libzmq libzmq3-dev)
    chesslens_require_pkg(SQLITE3 sqlite3 libsqlite3-dev)
    find_package(msgpack CONFIG QUIET)
    if(NOT msgpack_FOUND)
        message(FATAL_ERROR "msgpack-c not found: apt-get install libmsgpack-dev (or run deploy/install-deps.sh)")
    endif()
endif()

find_package(Threads REQUIRED)
find_library(MATH_LIBRARY m REQUIRED)

# CUDA is optional: the GPU backend is built when nvcc is found (also at /usr/local/cuda).
set(CHESSLENS_HAVE_CUDA OFF)
set(CHESSLENS_HAVE_NCCL OFF)
if(CHESSLENS_GPU)
    if(NOT DEFINED CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
        set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
    endif()
    include(CheckLanguage)
    check_language(CUDA)
    if(CMAKE_CUDA_COMPILER)
        if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
            # machine code for Hopper (H100/H200), the GPUs the backend targets, and PTX from
            # which the driver compiles it for any GPU from Ampere (sm_80) on
            set(CMAKE_CUDA_ARCHITECTURES "90-real;80-virtual")
        endif()
        enable_language(CUDA)
        find_package(CUDAToolkit REQUIRED)
        set(CHESSLENS_HAVE_CUDA ON)
        message(STATUS "GPU backend: on (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
        # NCCL, for several GPUs in one worker: beside the toolkit (CUDA's own packages put it
        # there), under NCCL_HOME, or in the system's paths. Without it such a worker still runs,
        # with weights and partial sums going through host memory (gpu/gpu.h).
        find_path(NCCL_INCLUDE_DIR nccl.h
            HINTS ${CUDAToolkit_INCLUDE_DIRS} $ENV{NCCL_HOME}/include)
        find_library(NCCL_LIBRARY nccl
            HINTS ${CUDAToolkit_LIBRARY_DIR} $ENV{NCCL_HOME}/lib $ENV{NCCL_HOME}/lib64)
        if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
            set(CHESSLENS_HAVE_NCCL ON)
            add_library(chesslens_nccl INTERFACE IMPORTED GLOBAL)
            target_include_directories(chesslens_nccl INTERFACE ${NCCL_INCLUDE_DIR})
            target_link_libraries(chesslens_nccl INTERFACE ${NCCL_LIBRARY})
            message(STATUS "NCCL: on (${NCCL_LIBRARY}): several GPUs per worker broadcast and reduce device to device")
        else()
            set(CHESSLENS_HAVE_NCCL OFF)
            message(STATUS "NCCL: off (nccl.h or libnccl not found; set NCCL_HOME): a worker with several GPUs moves weights and partial sums through host memory")
        endif()
    else()
        message(STATUS "GPU backend: off (nvcc not found; install the CUDA Toolkit to build gpu/)")
    endif()
else()
    message(STATUS "GPU backend: off (CHESSLENS_GPU=OFF)")
endif()
