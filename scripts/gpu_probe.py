"""A small CUDA program with no dependencies but libcuda (the driver API through ctypes):
run inside a GPU sandbox by tests/runtime/test_gpu_real.py and scripts/gpu-check.sh.

It initialises CUDA, names device 0, JIT-compiles a PTX kernel (adds 1.0 to each of 1024
floats), runs it and checks the result. Prints one line per step; exit 0 only when the
numbers came back right. Uses only the standard library, so it runs in the base image.
"""

import ctypes
import sys

PTX = b"""
.version 7.0
.target sm_50
.address_size 64
.visible .entry add_one(.param .u64 p, .param .u32 n)
{
  .reg .pred %p<2>;
  .reg .b32 %r<6>;
  .reg .b64 %rd<5>;
  .reg .f32 %f<3>;
  ld.param.u64 %rd1, [p];
  ld.param.u32 %r1, [n];
  mov.u32 %r2, %ctaid.x;
  mov.u32 %r3, %ntid.x;
  mov.u32 %r4, %tid.x;
  mad.lo.s32 %r5, %r2, %r3, %r4;
  setp.ge.u32 %p1, %r5, %r1;
  @%p1 bra DONE;
  cvta.to.global.u64 %rd2, %rd1;
  mul.wide.u32 %rd3, %r5, 4;
  add.s64 %rd4, %rd2, %rd3;
  ld.global.f32 %f1, [%rd4];
  add.f32 %f2, %f1, 0f3F800000;
  st.global.f32 [%rd4], %f2;
DONE:
  ret;
}
"""
N = 1024


def main() -> int:
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        print(f"FAIL libcuda.so.1 not loadable: {e}")
        return 2

    def check(rc: int, what: str) -> None:
        if rc != 0:
            msg = ctypes.c_char_p()
            cuda.cuGetErrorString(rc, ctypes.byref(msg))
            raise SystemExit(f"FAIL {what}: CUDA error {rc} {(msg.value or b'').decode()}")

    check(cuda.cuInit(0), "cuInit")
    count = ctypes.c_int()
    check(cuda.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
    dev = ctypes.c_int()
    check(cuda.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
    name = ctypes.create_string_buffer(256)
    check(cuda.cuDeviceGetName(name, 256, dev), "cuDeviceGetName")
    version = ctypes.c_int()
    check(cuda.cuDriverGetVersion(ctypes.byref(version)), "cuDriverGetVersion")
    print(f"ok devices={count.value} name={name.value.decode()} cuda={version.value}")
    ctx = ctypes.c_void_p()
    check(cuda.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev), "cuCtxCreate")
    module, func = ctypes.c_void_p(), ctypes.c_void_p()
    check(cuda.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(PTX)), "cuModuleLoadData")
    check(cuda.cuModuleGetFunction(ctypes.byref(func), module, b"add_one"),
          "cuModuleGetFunction")
    host = (ctypes.c_float * N)(*range(N))
    size = ctypes.c_size_t(ctypes.sizeof(host))
    dptr = ctypes.c_uint64()
    check(cuda.cuMemAlloc_v2(ctypes.byref(dptr), size), "cuMemAlloc")
    check(cuda.cuMemcpyHtoD_v2(dptr, host, size), "cuMemcpyHtoD")
    n = ctypes.c_uint32(N)
    args = (ctypes.c_void_p * 2)(ctypes.cast(ctypes.byref(dptr), ctypes.c_void_p),
                                 ctypes.cast(ctypes.byref(n), ctypes.c_void_p))
    check(cuda.cuLaunchKernel(func, 4, 1, 1, 256, 1, 1, 0, None, args, None), "cuLaunchKernel")
    check(cuda.cuCtxSynchronize(), "cuCtxSynchronize")
    check(cuda.cuMemcpyDtoH_v2(host, dptr, size), "cuMemcpyDtoH")
    bad = [i for i in range(N) if host[i] != i + 1]
    cuda.cuMemFree_v2(dptr)
    cuda.cuCtxDestroy_v2(ctx)
    if bad:
        print(f"FAIL kernel result wrong at {len(bad)} of {N} places (first {bad[0]})")
        return 1
    print(f"ok kernel added 1.0 to {N} floats on the GPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
