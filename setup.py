"""Build of the one compiled module, fastnn._kernels (Cython wrapper + src_c kernels).

Knobs (environment variables, all optional):
  FASTNN_NO_OPENMP=1   build without OpenMP even when the compiler has it;
  FASTNN_SANITIZE=1    build with -fsanitize=address,undefined (see README, "Sanitizer build");
  FASTNN_SANITIZE=thread  build with -fsanitize=thread (ThreadSanitizer; use FASTNN_NO_OPENMP=1
                       with it: GNU OpenMP is not instrumented, so its threads would be reported).
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import numpy
import scipy_openblas32
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))

CC = os.environ.get("CC") or sysconfig.get_config_var("CC").split()[0]


def compiles_with(flags):
    """True if a small OpenMP program compiles and links with these flags."""
    src = "#include <omp.h>\nint main(void){int n=0;\n#pragma omp parallel\n{n=omp_get_num_threads();}\nreturn n<1;}\n"
    d = tempfile.mkdtemp()
    try:
        with open(os.path.join(d, "t.c"), "w") as f:
            f.write(src)
        r = subprocess.run([CC, *flags, "t.c", "-o", "t"], cwd=d, capture_output=True)
        return r.returncode == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(d, ignore_errors=True)


compile_args = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-Wno-unknown-pragmas"]
link_args = []
if os.environ.get("FASTNN_NO_OPENMP") != "1" and compiles_with(["-fopenmp"]):
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")
    print("fastnn: building with OpenMP", file=sys.stderr)
else:
    print("fastnn: building without OpenMP", file=sys.stderr)
SANITIZERS = {"1": "address,undefined", "address": "address,undefined", "thread": "thread"}
if os.environ.get("FASTNN_SANITIZE") in SANITIZERS:
    san = [f"-fsanitize={SANITIZERS[os.environ['FASTNN_SANITIZE']]}", "-fno-omit-frame-pointer",
           "-O1", "-g"]
    compile_args += san
    link_args += san

# The BLAS is scipy-openblas32's shared library.  fastnn/__init__.py imports
# scipy_openblas32 (which loads it) before this module; the relative rpath covers a
# plain dlopen too.  No rpath points into pip's temporary build environment.
link_args.append("-Wl,-rpath,$ORIGIN/../scipy_openblas32/lib")

# src_c/: the runtime, and one file per kind of kernel, each a template (.inc) made for float
# and double by each_real.h.
C_FILES = ("runtime", "layers", "losses", "optimizers", "step", "bf16", "norm", "gemm")
C_HEADERS = ("fastnn.h", "runtime.h", "each_real.h", "real_instance.h", "layers.inc", "losses.inc",
             "optimizers.inc", "step.inc", "norm.inc", "gemm.inc", "gemm_isa.inc")

ext = Extension(
    "fastnn._kernels",
    sources=["fastnn/_kernels.pyx"] + [f"src_c/{f}.c" for f in C_FILES],
    include_dirs=["src_c", numpy.get_include(), scipy_openblas32.get_include_dir()],
    library_dirs=[scipy_openblas32.get_lib_dir()],
    libraries=[scipy_openblas32.get_library()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    depends=[f"src_c/{f}" for f in C_HEADERS] + ["fastnn/_kernels.pxd"],
)

# A knob changes the flags but not the sources: rebuild whenever the flags differ from
# those of the object files left in build/ (a stamp records them).
flags = " ".join(compile_args + link_args)
stamp = os.path.join("build", "fastnn-build-flags.txt")
try:
    with open(stamp) as f:
        force = f.read() != flags
except OSError:
    force = True
os.makedirs("build", exist_ok=True)
with open(stamp, "w") as f:
    f.write(flags)


class build_ext_also_in_tree(build_ext):
    """Also leaves the built extension in the source tree: Python started in the repository
    root, where ./fastnn shadows the installed package, then imports a working fastnn too."""

    def run(self):
        super().run()
        if self.inplace:
            return
        for e in self.extensions:
            built = self.get_ext_fullpath(e.name)
            target = os.path.join(HERE, *e.name.split(".")[:-1], os.path.basename(built))
            try:
                shutil.copyfile(built, target)
            except OSError as err:  # a read-only checkout: the installed package still works
                print(f"fastnn: could not leave {target} in the source tree ({err})",
                      file=sys.stderr)


setup(ext_modules=cythonize([ext], compiler_directives={"language_level": 3}, force=force),
      cmdclass={"build_ext": build_ext_also_in_tree}, options={"build_ext": {"force": force}})
