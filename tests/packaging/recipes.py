#!/usr/bin/env python3
"""The Spack recipe and the EasyBuild easyconfig, checked without Spack or EasyBuild (neither
can be installed here, and neither has built them): both parse as Python; every CMake option of
CMakeLists.txt that a site chooses is a variant of the recipe (mapped with define_from_variant)
and is set by the easyconfig's configopts; neither names an option CMakeLists.txt lacks; both
declare the MPI and HDF5 dependencies, and those of the variants.

    recipes.py SOURCE_DIR
"""
import ast
import re
import sys
from pathlib import Path

SRC = Path(sys.argv[1])
# Options for developers, not for a site's build: no variant.
DEVELOPER_OPTIONS = {"RANKFARM_WARNINGS_AS_ERRORS", "RANKFARM_FUZZ"}
failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL [recipes]: {msg}")


cmake = (SRC / "CMakeLists.txt").read_text()
options = set(re.findall(r"^\s*option\((RANKFARM_\w+)", cmake, re.M))
cache_vars = set(re.findall(r"set\((RANKFARM_\w+)\s[^)]*CACHE", cmake + (SRC / "cmake/Packaging.cmake").read_text()))
site_options = options - DEVELOPER_OPTIONS
print(f"CMake options: {sorted(options)}; a site's choices: {sorted(site_options)}")
if len(site_options) < 3:
    fail(f"too few site options found in CMakeLists.txt: {sorted(site_options)}")

# --- Spack -----------------------------------------------------------------------------------
spack_src = (SRC / "packaging/spack/package.py").read_text()
tree = ast.parse(spack_src, "packaging/spack/package.py")
cls = [n for n in tree.body if isinstance(n, ast.ClassDef)]
if len(cls) != 1 or not any(getattr(b, "id", "") == "CMakePackage" for b in cls[0].bases):
    fail("package.py: expected one class deriving from CMakePackage")


def calls(node, name):
    return [c for c in ast.walk(node) if isinstance(c, ast.Call) and getattr(c.func, "id", getattr(c.func, "attr", "")) == name]


def strings(call):
    return [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]


variants = {strings(c)[0] for c in calls(tree, "variant")}
mapped = {strings(c)[0]: strings(c)[1] for c in calls(tree, "define_from_variant")}
depends = [strings(c)[0] for c in calls(tree, "depends_on")]
depends_when = {strings(c)[0]: next((k.value.value for k in c.keywords if k.arg == "when"), None) for c in calls(tree, "depends_on")}
print(f"spack: variants {sorted(variants)}; cmake_args {mapped}")
for opt in sorted(site_options):
    if opt not in mapped:
        fail(f"spack: the CMake option {opt} has no variant (define_from_variant)")
for opt, var in mapped.items():
    if opt not in options:
        fail(f"spack: define_from_variant names {opt}, which CMakeLists.txt does not have")
    if var not in variants:
        fail(f"spack: define_from_variant maps {opt} to variant {var}, which is not declared")
for var in variants:
    if var not in mapped.values():
        fail(f"spack: variant {var} is not passed to CMake")
for d in ("mpi", "hdf5+mpi", "sqlite", "openblas", "hwloc", "cli11", "tomlplusplus", "fmt", "nlohmann-json", "random123", "libpng"):
    if not any(x == d or x.startswith(d + "@") for x in depends):
        fail(f"spack: no depends_on({d!r})")
for dep, when in (("libfabric", "+ofi"), ("rdma-core", "+verbs"), ("googletest", "+tests")):
    got = next((w for d, w in depends_when.items() if d == dep or d.startswith(dep + "@")), "absent")
    if got != when:
        fail(f"spack: depends_on({dep!r}) should be when={when!r}, is {got!r}")
for name in (strings(c)[0] for c in calls(tree, "define") if strings(c)):
    if name not in options | cache_vars:
        fail(f"spack: define({name!r}) is not an option or cache variable of the CMake build")

# --- EasyBuild -------------------------------------------------------------------------------
for eb in sorted((SRC / "packaging/easybuild").glob("*.eb")):
    text = eb.read_text()
    ec = {}
    exec(compile(text, str(eb), "exec"), {}, ec)  # an easyconfig is Python assignments
    for key in ("easyblock", "name", "version", "homepage", "description", "toolchain", "dependencies", "configopts",
                "sanity_check_paths", "moduleclass"):
        if key not in ec:
            fail(f"{eb.name}: no {key}")
    if ec.get("easyblock") != "CMakeMake":
        fail(f"{eb.name}: easyblock should be CMakeMake")
    if f"{ec.get('name')}-{ec.get('version')}-{ec['toolchain']['name']}-{ec['toolchain']['version']}.eb" != eb.name:
        fail(f"{eb.name}: the file name is not NAME-VERSION-TOOLCHAIN.eb")
    given = dict(re.findall(r"-D(RANKFARM_\w+)=(\S*)", ec.get("configopts", "")))
    print(f"{eb.name}: configopts {given}")
    for opt in sorted(site_options):
        if opt not in given:
            fail(f"{eb.name}: configopts does not set {opt}")
    for opt in given:
        if opt not in options | cache_vars:
            fail(f"{eb.name}: configopts sets {opt}, which the CMake build does not have")
    deps = [d[0] for d in ec.get("dependencies", []) + ec.get("builddependencies", [])]
    for d in ("HDF5", "SQLite", "OpenBLAS", "hwloc", "libfabric", "rdma-core", "CLI11", "tomlplusplus", "nlohmann_json", "fmt", "Random123"):
        if d not in deps:
            fail(f"{eb.name}: no dependency {d}")
    if ec["toolchain"]["name"] not in ("foss", "gompi"):
        fail(f"{eb.name}: the toolchain should bring Open MPI (foss or gompi)")
    for f in ec["sanity_check_paths"]["files"]:
        rel = f.replace("bin/", "", 1)
        if f.startswith("bin/") and f"TARGETS {rel}" not in cmake and f" {rel} " not in cmake and f" {rel}\n" not in cmake:
            fail(f"{eb.name}: sanity check names {f}, which is not installed")

if failures:
    sys.exit(1)
print("Neither recipe has been built by its tool here (Spack and EasyBuild are not installed); checked: syntax, variants, options, dependencies")
print("PASS [recipes]")
