"""The Vitis HLS project around the kernel: the C++ testbench (built here with g++, in the native
and the ap_int build), hls/project.py, hls/run_hls.tcl (run under a plain Tcl interpreter with
the Vitis commands recorded), a lint of the synthesizable sources, and the INTERFACE pragmas
against the register map."""
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from hls import boards, csim, project, regmap

ROOT = csim.ROOT
TB = os.path.join(csim.HERE, "tb", "e2t_engine_tb.cpp")
KERNEL_CPP = os.path.join(csim.HERE, "src", "e2t_engine.cpp")
KERNEL_H = os.path.join(csim.HERE, "src", "e2t_engine.h")
CHECKS_H = os.path.join(csim.HERE, "src", "e2t_checks.h")
NUMERICS_H = os.path.join(csim.INCLUDE, "e2t_numerics.h")
TB_BOARDS = ("pynq-z2", "zcu104")  # 8x8 and 16x16 tiles
VARIANTS = ("native", "ap")

# g++ flags: the testbench must be warning-free; the kernel carries Vitis HLS pragmas and loop
# labels g++ does not know, and hls4ml's ap_private trips g++'s uninitialized-value analysis.
WARN = ["-Wall", "-Wextra"]
KERNEL_WARN = WARN + ["-Wno-unknown-pragmas", "-Wno-unused-label"]
AP_KERNEL_WARN = KERNEL_WARN + ["-Wno-maybe-uninitialized", "-Wno-uninitialized"]


# -- the testbench with g++ ---------------------------------------------------------------------

def _testbench_jobs(board: str, variant: str, folder: str) -> tuple[list[list[str]], list[str], str]:
    """(compile commands, link command, executable) of the testbench build ``variant`` for ``board``."""
    cfg = os.path.join(folder, "cfg")
    os.makedirs(cfg, exist_ok=True)
    with open(os.path.join(cfg, "engine_config.h"), "w") as f:
        f.write(boards.config_header(boards.board(board)))
    base = [csim.CXX, "-std=c++17", "-O1", "-I", csim.INCLUDE, "-I", os.path.join(csim.HERE, "src"), "-I", cfg]
    if variant == "ap":
        base += ["-DE2T_AP_TYPES", "-isystem", csim.ap_types_dir()]
    tb_o, k_o, exe = (os.path.join(folder, n) for n in ("tb.o", "kernel.o", "tb"))
    tb = base + WARN + ["-Werror", "-c", TB, "-o", tb_o]
    kernel = base + (AP_KERNEL_WARN if variant == "ap" else KERNEL_WARN) + ["-c", KERNEL_CPP, "-o", k_o]
    return [tb, kernel], [csim.CXX, tb_o, k_o, "-o", exe], exe


@pytest.fixture(scope="module")
def testbench_runs(tmp_path_factory):
    """Build the four testbenches in parallel and run them: {(board, variant): (ok, log)}."""
    if shutil.which(csim.CXX) is None:
        pytest.skip(f"{csim.CXX} is not installed")
    root = tmp_path_factory.mktemp("hls_tb")
    builds = {(b, v): _testbench_jobs(b, v, str(root / f"{b}-{v}")) for b in TB_BOARDS for v in VARIANTS}

    def run(cmd):
        return subprocess.run(cmd, capture_output=True, text=True)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        compiled = {key: [pool.submit(run, c) for c in jobs[0]] for key, jobs in builds.items()}
        # the testbench as plain C++11 too: the compilers of older Vitis HLS releases
        old_std = pool.submit(run, [csim.CXX, "-std=c++11", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-fsyntax-only",
                                    "-I", csim.INCLUDE, "-I", os.path.join(csim.HERE, "src"),
                                    "-I", str(root / "pynq-z2-native" / "cfg"), TB])
        results = {}
        for key, futures in compiled.items():
            done = [f.result() for f in futures]
            log = "".join(f"$ {' '.join(c)}\n{d.stdout}{d.stderr}" for c, d in zip(builds[key][0], done))
            if any(d.returncode for d in done):
                results[key] = (False, "compile failed:\n" + log)
                continue
            link = run(builds[key][1])
            if link.returncode:
                results[key] = (False, "link failed:\n" + link.stderr)
                continue
            out = run([builds[key][2]])
            results[key] = (out.returncode == 0, out.stdout + out.stderr)
        results["c++11"] = (old_std.result().returncode == 0, old_std.result().stderr)
    return results


@pytest.mark.parametrize("board", TB_BOARDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_testbench_passes_with_gcc(testbench_runs, board, variant):
    ok, log = testbench_runs[(board, variant)]
    assert ok, log
    b = boards.board(board)
    summary = [line for line in log.splitlines() if line.startswith("e2t_engine_tb:")]
    assert len(summary) == 1, log
    assert f"board {board}, tiles {b.tile_o}x{b.tile_i}" in summary[0]
    assert ("ap_int types" if variant == "ap" else "native types") in summary[0]
    assert summary[0].endswith(" 0 mismatches: PASS"), log


def test_testbench_is_plain_cxx11(testbench_runs):
    ok, log = testbench_runs["c++11"]
    assert ok, log


def test_testbench_buffers_are_sized_for_cosim():
    """C/RTL co-simulation copies `depth` elements of every m_axi buffer: the testbench must hand
    the kernel arrays of (at least) the E2T_DEPTH_* sizes."""
    with open(TB) as f:
        text = f.read()
    for r in regmap.REGISTERS:
        if r.kind == "ptr":
            assert f"{r.name}(E2T_DEPTH_{r.name.upper()})" in text, r.name


# -- hls/project.py -----------------------------------------------------------------------------

def _no_vitis_env(tmp_path) -> dict:
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "VITIS_HLS" and not k.startswith("E2T_HLS_")}
    env["PATH"] = str(empty)
    return env


def test_project_without_vitis_hls_stops_with_one_clear_line(tmp_path):
    out = tmp_path / "prj"
    done = subprocess.run([sys.executable, "-m", "hls.project", "--board", "pynq-z2", "--steps", "csim,csynth",
                           "--out", str(out)], cwd=ROOT, env=_no_vitis_env(tmp_path), capture_output=True, text=True)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    line = lines[0]
    for words in ("Vitis HLS is needed", "csim, csynth", "'vitis_hls' is not on PATH", "engine_config.h", "pynq-z2",
                  "xc7z020clg400-1", "make -C hls csim-gcc"):
        assert words in line, line
    with open(out / "include" / "engine_config.h") as f:
        assert f.read() == boards.config_header(boards.board("pynq-z2"))


def test_project_dry_run_prints_the_vitis_command(tmp_path, capsys):
    out = tmp_path / "prj"
    assert project.main(["--board", "zcu104", "--steps", "export,csynth", "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "vitis_hls -f " + project.TCL in printed and project.TCL.endswith(os.path.join("hls", "run_hls.tcl"))
    for word in ("-tclargs", "board=zcu104", "part=xczu7ev-ffvc1156-2-e", "clock_mhz=200", "steps=csynth,export",
                 f"out={out}", f"config_dir={out / 'include'}"):
        assert word in printed, printed
    assert not out.exists()  # a dry run writes nothing


def test_project_runs_vitis_hls_in_the_project_folder(tmp_path, monkeypatch):
    """With a vitis_hls on PATH the real command runs, in the project folder, and its status is
    passed on (here a recording stand-in for the tool)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "argv.txt"
    bin_dir.mkdir()
    fake = bin_dir / "vitis_hls"
    fake.write_text(f'#!/bin/sh\npwd > "{log}"\nprintf "%s\\n" "$@" >> "{log}"\nexit 3\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("VITIS_HLS", raising=False)
    out = tmp_path / "prj"
    assert project.main(["--board", "kv260", "--steps", "all", "--out", str(out)]) == 3
    recorded = log.read_text().splitlines()
    board = boards.board("kv260")
    assert os.path.realpath(recorded[0]) == os.path.realpath(out)
    assert recorded[1:] == project.command(board, list(project.STEPS), str(out))[1:]
    assert (out / "include" / "engine_config.h").read_text() == boards.config_header(board)


def test_project_steps():
    assert project.parse_steps("all") == ["csim", "csynth", "cosim", "export"]
    assert project.parse_steps("export, csim") == ["csim", "export"]
    for bad in ("synth", "", "csim,impl"):
        with pytest.raises(ValueError):
            project.parse_steps(bad)
    with pytest.raises(SystemExit):
        project.main(["--board", "nosuchboard", "--dry-run"])


# -- hls/run_hls.tcl ----------------------------------------------------------------------------

VITIS_COMMANDS = ("open_project", "set_top", "add_files", "open_solution", "set_part", "create_clock",
                  "config_interface", "config_export", "csim_design", "csynth_design", "cosim_design",
                  "export_design", "close_project")


def _tcl_text() -> str:
    with open(project.TCL) as f:
        return f.read()


def test_tcl_names_every_step_and_the_vlnv():
    text = _tcl_text()
    for word in ("open_project", "set_top e2t_engine", "add_files -tb", "-cflags", "open_solution",
                 "-flow_target vivado", "set_part", "create_clock -period", "config_interface", "csim_design",
                 "csynth_design", "cosim_design", "export_design -format ip_catalog", "-display_name",
                 "-description", "argv", "exit"):
        assert word in text, word
    vlnv = re.search(r"-vendor (\S+) -library (\S+) -ipname (\S+) -version (\S+)", text)
    assert vlnv and ":".join(vlnv.groups()) == regmap.VLNV
    assert "hls4ml" not in text and "-isystem" not in text  # Vitis HLS brings its own ap_int.h


def _run_tcl(monkeypatch, words: list[str]) -> list[tuple]:
    """Source run_hls.tcl in a plain Tcl interpreter with argv = ``words``, the Vitis HLS commands
    (and cd, exit) recorded instead of run; returns the recorded calls."""
    tkinter = pytest.importorskip("tkinter")
    for key in [k for k in os.environ if k.startswith("E2T_HLS_")]:
        monkeypatch.delenv(key)
    tcl = tkinter.Tcl()
    calls = []
    tcl.createcommand("e2t_record", lambda *a: calls.append(tuple(a)) or "")
    for name in VITIS_COMMANDS:
        tcl.eval(f"proc {name} args {{ e2t_record {name} {{*}}$args }}")
    tcl.eval("proc cd {dir} { e2t_record cd $dir }")
    tcl.eval("proc exit {{code 0}} { e2t_record exit $code; return -code error E2T_TEST_EXIT }")
    tcl.call("set", "argv", tuple(words))
    tcl.call("set", "argc", len(words))
    try:
        tcl.call("source", project.TCL)
    except tkinter.TclError as e:
        assert "E2T_TEST_EXIT" in str(e), e
    return calls


def _tclargs(board: str, steps: list[str], out) -> list[str]:
    cmd = project.command(boards.board(board), steps, str(out))
    return cmd[cmd.index("-tclargs") + 1:]


@pytest.mark.parametrize("board", ["pynq-z2", "zcu104"])
def test_tcl_runs_the_whole_flow_for_the_board(tmp_path, monkeypatch, board):
    b = boards.board(board)
    out = tmp_path / "prj"
    project.prepare(b, str(out))
    calls = _run_tcl(monkeypatch, _tclargs(board, list(project.STEPS), out))
    names = [c[0] for c in calls]
    assert names == ["cd", "open_project", "set_top", "add_files", "add_files", "open_solution", "set_part",
                     "create_clock", "config_interface", "csim_design", "csynth_design", "cosim_design",
                     "export_design", "close_project", "exit"], calls
    by = {c[0]: c[1:] for c in calls}
    assert calls[-1] == ("exit", "0")
    assert by["cd"] == (str(out),)
    assert by["set_top"] == ("e2t_engine",)
    assert by["set_part"] == (b.part,)
    assert by["create_clock"][:2] == ("-period", f"{1000 / b.clock_mhz:g}")
    assert "-reset" in by["open_solution"] and "vivado" in by["open_solution"]
    assert "-m_axi_addr64" in by["config_interface"] and "-m_axi_alignment_byte_size" in by["config_interface"]
    sources = [c for c in calls if c[0] == "add_files"]
    assert sources[0][-1] == KERNEL_CPP and "-tb" not in sources[0]
    assert sources[1][-1] == TB and sources[1][1] == "-tb"
    for src in sources:
        cflags = src[src.index("-cflags") + 1]
        assert "-DE2T_AP_TYPES" in cflags and f"-I{out / 'include'}" in cflags and "hls4ml" not in cflags
        assert f"-I{csim.INCLUDE}" in cflags
    export = dict(zip(by["export_design"][0::2], by["export_design"][1::2]))
    assert export["-format"] == "ip_catalog"
    assert ":".join(export[k] for k in ("-vendor", "-library", "-ipname", "-version")) == regmap.VLNV
    assert board in export["-display_name"] and export["-description"]
    assert export["-output"].startswith(str(out))


def test_tcl_later_steps_reuse_the_synthesis(tmp_path, monkeypatch):
    out = tmp_path / "prj"
    project.prepare(boards.board("pynq-z2"), str(out))
    calls = _run_tcl(monkeypatch, _tclargs("pynq-z2", ["cosim", "export"], out))
    names = [c[0] for c in calls]
    assert "csim_design" not in names and "csynth_design" not in names
    assert "cosim_design" in names and "export_design" in names
    assert "-reset" not in dict((c[0], c[1:]) for c in calls)["open_solution"]


def test_tcl_refuses_missing_or_mismatched_parameters(tmp_path, monkeypatch):
    out = tmp_path / "prj"
    project.prepare(boards.board("zcu104"), str(out))
    words = _tclargs("pynq-z2", ["csynth"], out)  # engine_config.h is zcu104's
    assert _run_tcl(monkeypatch, words) == [("exit", "2")]
    no_part = [w for w in _tclargs("zcu104", ["csynth"], out) if not w.startswith("part=")]
    assert _run_tcl(monkeypatch, no_part) == [("exit", "2")]
    bad_step = _tclargs("zcu104", ["csynth"], out) + ["steps=csynth,impl"]
    bad_step.remove("steps=csynth")
    assert _run_tcl(monkeypatch, bad_step) == [("exit", "2")]


# -- lint of the synthesizable sources ----------------------------------------------------------

FUNC_DEF = re.compile(r"\b([A-Za-z_]\w*)\s*\((?:[^;{}()]|\([^()]*\))*\)\s*(?:const\s*)?\{")
NOT_FUNCTIONS = {"if", "for", "while", "switch", "catch", "return", "sizeof"}
STL = ("vector", "list", "deque", "map", "set", "unordered_map", "unordered_set", "string", "array", "queue",
       "stack", "memory", "functional", "algorithm", "iostream", "sstream")


def _code(text: str) -> str:
    """``text`` without comments and with empty string literals."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(?:\\.|[^"\\\n])*"', '""', text)


def _functions(code: str) -> dict[str, str]:
    """Function definitions (name -> body) outside other function bodies."""
    out, end = {}, 0
    for m in FUNC_DEF.finditer(code):
        if m.start() < end or m.group(1) in NOT_FUNCTIONS:
            continue
        depth, i = 0, m.end() - 1
        while True:
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            if depth == 0:
                break
            i += 1
        out[m.group(1)] = out.get(m.group(1), "") + code[m.end():i]
        end = i
    return out


def lint(sources: dict[str, str]) -> list[str]:
    """Problems that keep C++ from synthesizing as it reads: dynamic memory, the STL and std::,
    hls_stream.h, recursion (a call graph over the definitions in ``sources``: name -> text)."""
    problems, graph = [], {}
    for name, text in sources.items():
        code = _code(text)
        for inc in re.findall(r'#\s*include\s*[<"]([^>"]+)[>"]', re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S)):
            if inc in STL or inc == "hls_stream.h":
                problems.append(f"{name}: includes <{inc}>")
        for word in re.findall(r"\b(new|delete|malloc|calloc|realloc|free)\b", code):
            problems.append(f"{name}: dynamic memory ({word})")
        if re.search(r"\bstd\s*::", code):
            problems.append(f"{name}: uses std::")
        for word in re.findall(r"\b(" + "|".join(STL) + r")\s*<", code):
            problems.append(f"{name}: STL container {word}<>")
        for fn, body in _functions(code).items():
            graph.setdefault(fn, set()).update(re.findall(r"\b([A-Za-z_]\w*)\s*\(", body))
    for fn in graph:
        seen, todo = set(), [c for c in graph[fn] if c in graph]
        while todo:
            callee = todo.pop()
            if callee not in seen:
                seen.add(callee)
                todo += [c for c in graph[callee] if c in graph]
        if fn in seen:
            problems.append(f"recursion: {fn} calls itself (directly or through others)")
    return problems


def test_lint_finds_what_it_looks_for():
    bad = """#include <vector>
#include "hls_stream.h"
int fact(int n) { return n ? n * fact(n - 1) : 1; }
int ping(int n);
int pong(int n) { return n ? ping(n - 1) : 0; }
int ping(int n) { if (n) { return pong(n); } return 0; }
void f() { int *p = new int[3]; delete[] p; std::vector<int> v; void *q = malloc(4); free(q); }
"""
    found = "\n".join(lint({"bad.cpp": bad}))
    for what in ("<vector>", "<hls_stream.h>", "fact calls itself", "ping calls itself", "pong calls itself",
                 "(new)", "(delete)", "(malloc)", "(free)", "std::"):
        assert what in found, found
    ok = "// new std::vector in a comment\nint g(int a) { return a + 1; }\nint h(int b) { return g(b) * 2; }\n"
    assert lint({"ok.cpp": ok}) == []


def test_kernel_sources_are_synthesizable_cxx():
    """hls/src/e2t_engine.{cpp,h}, e2t_checks.h and the contract's header they include: no dynamic
    memory, no STL or std::, no hls_stream.h, no recursion."""
    sources = {}
    for path in (KERNEL_CPP, KERNEL_H, CHECKS_H, NUMERICS_H):
        with open(path) as f:
            sources[os.path.relpath(path, ROOT)] = f.read()
    assert lint(sources) == []
    assert {"e2t_engine", "conv_fwd", "conv_bwd_data", "conv_wgrad", "update", "sign_update"} <= set(
        _functions(_code(sources[os.path.relpath(KERNEL_CPP, ROOT)] + sources[os.path.relpath(NUMERICS_H, ROOT)])))


# -- INTERFACE pragmas and the register map -----------------------------------------------------

def test_regmap_check_passes():
    done = subprocess.run([sys.executable, "-m", "hls.regmap", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _top_arguments(text: str) -> list[str]:
    m = re.search(r"\bvoid\s+e2t_engine\s*\(([^)]*)\)", _code(text))
    return [re.search(r"(\w+)\s*$", p.strip()).group(1) for p in m.group(1).split(",")]


def test_interface_pragmas_match_the_register_map():
    with open(KERNEL_CPP) as f:
        kernel = f.read()
    with open(KERNEL_H) as f:
        header = f.read()
    with open(regmap.JSON) as f:
        registers = json.load(f)["registers"]
    pragmas = [dict(re.findall(r"(\w+)=(\S+)", line))
               for line in re.findall(r"^\s*#pragma\s+HLS\s+INTERFACE\b(.*)$", kernel, flags=re.M)]
    axilite = {p["port"]: p for p in pragmas if p.get("mode") == "s_axilite"}
    assert len(axilite) == sum(1 for p in pragmas if p.get("mode") == "s_axilite")  # one per port
    for p in pragmas:
        if "offset" in p and p["offset"].startswith("0x"):
            assert p["port"] in registers, p
            assert int(p["offset"], 16) == registers[p["port"]]["offset"], p
    args = _top_arguments(header)
    assert args == _top_arguments(kernel) == list(registers)
    for arg in args:
        assert arg in axilite and axilite[arg].get("bundle") == regmap.BUNDLE, arg
        assert int(axilite[arg]["offset"], 16) == registers[arg]["offset"], arg
    assert "return" in axilite
    m_axi = {p["port"] for p in pragmas if p.get("mode") == "m_axi"}
    assert m_axi == {name for name, r in registers.items() if r["kind"] == "address"}
