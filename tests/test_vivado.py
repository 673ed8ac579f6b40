"""The Vivado build of the overlay without Vivado: bitstreams/build_prj.tcl run in plain tclsh with
every Vivado command recorded by a stand-in, the project.tcl bitstreams/vivado.py generates from the
board data, the tool checks, and the command line's one-line errors."""
import dataclasses
import os
import re
import shutil
import subprocess
import sys

import pytest

from bitstreams import vivado
from contract import boards
from contract.errors import E2TError
from hls import project, regmap
from host.plan import planbuild

TCLSH = shutil.which("tclsh")
needs_tclsh = pytest.mark.skipif(TCLSH is None, reason="tclsh is not installed (apt-get install tcl; make test does)")

# Stand-ins for the Vivado commands build_prj.tcl uses: each appends its name and arguments (one
# Tcl list per line) to $stub_log and returns what the script needs. wait_on_run writes the
# bitstream and the hardware handoff where Vivado would, unless $stub_fail_run is set.
STUB = r"""
proc stub_record {args} {
    set f [open $::stub_log a]
    puts $f $args
    close $f
}
foreach name {update_ip_catalog create_bd_design apply_bd_automation connect_bd_intf_net connect_bd_net
              assign_bd_address validate_bd_design save_bd_design add_files update_compile_order
              set_property launch_runs} {
    proc $name args "stub_record $name {*}\$args; return {}"
}
proc create_project {args} {
    stub_record create_project {*}$args
    set words [lsearch -all -inline -not -glob $args -*]
    set ::stub_project_dir [lindex $words 1]
    return [lindex $words 0]
}
proc current_project {} { return e2t }
proc current_fileset {} { return sources_1 }
proc get_board_parts {args} {
    stub_record get_board_parts {*}$args
    if {$::stub_board_parts} { return [lindex $args end] }
    return {}
}
proc get_ipdefs {args} {
    stub_record get_ipdefs {*}$args
    set pattern [lindex $args end]
    if {$pattern eq $::stub_missing_ip} { return {} }
    return [list [string map {* 1.1} $pattern] [string map {* 1.10} $pattern] [string map {* 1.9} $pattern]]
}
proc create_bd_cell {args} {
    stub_record create_bd_cell {*}$args
    return /[lindex $args end]
}
proc get_bd_intf_pins {args} {
    stub_record get_bd_intf_pins {*}$args
    if {[lindex $args 0] eq "-of_objects"} {
        return [lmap name $::stub_m_axi { string cat [lindex $args 1]/$name }]
    }
    return [lindex $args end]
}
proc get_bd_pins {args} {
    stub_record get_bd_pins {*}$args
    if {[lindex $args 0] eq "-of_objects"} {
        return [lmap name $::stub_ps_clocks { string cat [lindex $args 1]/$name }]
    }
    return [lindex $args end]
}
proc get_files {args} {
    stub_record get_files {*}$args
    return $::stub_project_dir/e2t.srcs/sources_1/bd/e2t/[lindex $args end]
}
proc make_wrapper {args} {
    stub_record make_wrapper {*}$args
    return $::stub_project_dir/e2t.gen/sources_1/bd/e2t/hdl/e2t_wrapper.v
}
proc get_runs {name} { return $name }
proc wait_on_run {args} {
    stub_record wait_on_run {*}$args
    if {$::stub_fail_run} { return }
    set bit $::stub_project_dir/e2t.runs/impl_1/e2t_wrapper.bit
    set hwh $::stub_project_dir/e2t.gen/sources_1/bd/e2t/hw_handoff/e2t.hwh
    foreach {path text} [list $bit "bitstream" $hwh "<hwh/>"] {
        file mkdir [file dirname $path]
        set f [open $path w]
        puts -nonewline $f $text
        close $f
    }
}
proc get_property {name object} {
    switch -- $name {
        DIRECTORY { return $::stub_project_dir/e2t.runs/$object }
        PROGRESS { return [expr {$::stub_fail_run ? "40%" : "100%"}] }
        STATUS { return [expr {$::stub_fail_run ? "route_design ERROR" : "write_bitstream Complete!"}] }
        STATS.WNS { return $::stub_wns }
    }
    error "stub get_property: no $name"
}
"""

# The Vivado interfaces of the exported engine: one m_axi per bundle of the kernel's pragmas.
M_AXI = sorted({f"m_axi_{b}" for b in re.findall(r"mode=m_axi\b[^\n]*\bbundle=(\w+)",
                                                  open(os.path.join(project.HERE, "src", "e2t_engine.cpp")).read())})
PS_CLOCKS = {"zynq7": ["M_AXI_GP0_ACLK", "S_AXI_HP0_ACLK"], "zynqmp": ["maxihpm0_fpd_aclk", "saxihp0_fpd_aclk"]}


def _tcl_list(words) -> str:
    return "{" + " ".join("{" + str(w) + "}" for w in words) + "}"


def run_build_prj(tmp_path, argv, family="zynq7", fail_run=False, board_parts=True, missing_ip="", wns="0.25"):
    """Run build_prj.tcl in tclsh behind the stand-ins; returns (completed process, recorded calls)."""
    log = tmp_path / "vivado_calls.txt"
    log.unlink(missing_ok=True)
    stub, wrapper = tmp_path / "vivado_stub.tcl", tmp_path / "run_build_prj.tcl"
    stub.write_text(STUB)
    wrapper.write_text("\n".join([
        f"set stub_log {{{log}}}", f"set stub_m_axi {_tcl_list(M_AXI)}",
        f"set stub_ps_clocks {_tcl_list(PS_CLOCKS[family])}", f"set stub_fail_run {int(fail_run)}",
        f"set stub_board_parts {int(board_parts)}", f"set stub_missing_ip {{{missing_ip}}}",
        f"set stub_wns {{{wns}}}", "set stub_project_dir {}",
        f"source {{{stub}}}", f"set argv {_tcl_list(argv)}", f"set argc {len(argv)}",
        f"source {{{vivado.SCRIPT}}}", ""]))
    done = subprocess.run([TCLSH, str(wrapper)], capture_output=True, text=True, timeout=60)
    calls = []
    if log.exists():
        interp = subprocess.run([TCLSH], input=f"set f [open {{{log}}}]\nwhile {{[gets $f line] >= 0}} "
                                "{ puts [join $line \\x1f] }\n", capture_output=True, text=True, timeout=60)
        calls = [tuple(line.split("\x1f")) for line in interp.stdout.splitlines()]
    return done, calls


def board_project(tmp_path, name: str, jobs: int = 3) -> tuple[boards.Board, str, str]:
    """(board, project.tcl path, out_dir) with an IP folder where the HLS export leaves it."""
    b = boards.board(name)
    repo = vivado.ip_repo(b, str(tmp_path / "hls"))
    os.makedirs(repo, exist_ok=True)
    out = str(tmp_path / "overlay")
    path = tmp_path / "project.tcl"
    path.write_text(vivado.project_tcl(b, repo, out, str(tmp_path / "prj"), jobs))
    return b, str(path), out


def _by(calls, name):
    return [c[1:] for c in calls if c[0] == name]


def _options(args) -> dict:
    return dict(zip(args[0::2], args[1::2]))


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# -- (a) the block design and the build for each family ------------------------------------------

@needs_tclsh
@pytest.mark.parametrize("name", ["pynq-z2", "zcu104"])
def test_build_prj_builds_the_board_s_block_design(tmp_path, name):
    b, tcl, out = board_project(tmp_path, name)
    done, calls = run_build_prj(tmp_path, [tcl], b.family)
    assert done.returncode == 0, done.stderr
    assert all(line.startswith("build_prj.tcl: ") for line in done.stdout.splitlines()), done.stdout
    names = [c[0] for c in calls]
    order = ["create_project", "update_ip_catalog", "create_bd_design", "apply_bd_automation", "assign_bd_address",
             "validate_bd_design", "save_bd_design", "make_wrapper", "launch_runs", "wait_on_run"]
    assert [n for n in names if n in order] == order, names

    create = _by(calls, "create_project")[0]
    assert _options(create[create.index("-part"):])["-part"] == b.part and str(tmp_path / "prj") in create
    props = _by(calls, "set_property")
    assert ("board_part", b.board_part, "e2t") in props
    assert ("ip_repo_paths", vivado.ip_repo(b, str(tmp_path / "hls")), "e2t") in props
    assert ("e2t",) in _by(calls, "create_bd_design")

    cells = {c[-1]: _options(c[:-1]) for c in _by(calls, "create_bd_cell")}
    ps_cell = f"{b.ps}_0"
    assert cells[ps_cell]["-vlnv"] == f"xilinx.com:ip:{b.ps}:1.10"  # the newest in the catalog
    assert cells["e2t_engine_0"]["-vlnv"] == regmap.VLNV == "e2t:hls:e2t_engine:1.0"
    assert {"rst_pl", "ctrl_smc", "mem_smc0", "mem_smc1"} <= set(cells)
    automation = _by(calls, "apply_bd_automation")[0]
    assert _options(automation[:-1])["-rule"] == f"xilinx.com:bd_rule:{b.ps}" and automation[-1] == f"/{ps_cell}"
    assert 'apply_board_preset "1"' in _options(automation[:-1])["-config"]

    ps_props = next(_options(p[1].split()) for p in props if p[0] == "-dict" and p[2] == f"/{ps_cell}")
    n = b.pl_clock[-1]
    if b.family == "zynq7":
        assert ps_props[f"CONFIG.PCW_FPGA{n}_PERIPHERAL_FREQMHZ"] == f"{b.clock_mhz:g}"
        assert ps_props[f"CONFIG.PCW_USE_{b.axi_lite_port}"] == "1"
        reset = f"FCLK_RESET{n}_N"
    else:
        assert ps_props[f"CONFIG.PSU__CRL_APB__PL{n}_REF_CTRL__FREQMHZ"] == f"{b.clock_mhz:g}"
        assert b.axi_lite_port == "M_AXI_HPM0_FPD" and ps_props["CONFIG.PSU__USE__M_AXI_GP0"] == "1"
        reset = f"pl_resetn{n}"

    intf = _by(calls, "connect_bd_intf_net")
    assert (f"/{ps_cell}/{b.axi_lite_port}", "/ctrl_smc/S00_AXI") in intf
    assert ("/ctrl_smc/M00_AXI", "/e2t_engine_0/s_axi_control") in intf
    # each m_axi master (the read and the write bundle) on an HP port of its own, the others off
    assert M_AXI == ["m_axi_gmem_rd", "m_axi_gmem_wr"]
    hp_props = next(_options(p[1].split()) for p in props if p[0] == "-dict" and p[2] == f"/{ps_cell}"
                    and any("S_AXI_HP" in k or "S_AXI_GP" in k for k in p[1].split()[0::2]))
    on = [1, 1, 0, 0]
    want = ({f"CONFIG.PCW_USE_S_AXI_HP{i}": str(v) for i, v in enumerate(on)} if b.family == "zynq7" else
            {f"CONFIG.PSU__USE__S_AXI_GP{i + 2}": str(v) for i, v in enumerate(on)})  # S_AXI_HP<i>_FPD
    assert hp_props == want
    for k, m in enumerate(M_AXI):
        assert (f"/e2t_engine_0/{m}", f"/mem_smc{k}/S00_AXI") in intf
        assert (f"/mem_smc{k}/M00_AXI", f"/{ps_cell}/{b.hp_ports[k]}") in intf
        smc = next(_options(p[1].split()) for p in props if p[0] == "-dict" and p[2] == f"/mem_smc{k}")
        assert smc["CONFIG.NUM_SI"] == "1"

    nets = _by(calls, "connect_bd_net")
    clock = next(net for net in nets if net[0] == f"/{ps_cell}/{b.pl_clock}")
    assert {"/e2t_engine_0/ap_clk", "/rst_pl/slowest_sync_clk", "/ctrl_smc/aclk", "/mem_smc0/aclk",
            "/mem_smc1/aclk"} <= set(clock)
    assert {f"/{ps_cell}/{pin}" for pin in PS_CLOCKS[b.family]} <= set(clock)
    assert (f"/{ps_cell}/{reset}", "/rst_pl/ext_reset_in") in nets
    assert ("/rst_pl/peripheral_aresetn", "/e2t_engine_0/ap_rst_n") in nets

    launch = _by(calls, "launch_runs")[0]
    assert launch[0] == "impl_1" and _options(launch[1:]) == {"-to_step": "write_bitstream", "-jobs": "3"}
    assert sorted(os.listdir(out)) == ["e2t.bit", "e2t.hwh"]
    with open(os.path.join(out, "e2t.hwh")) as f:
        assert f.read() == "<hwh/>"


@needs_tclsh
def test_build_prj_fails_when_no_bitstream_is_written(tmp_path):
    _, tcl, out = board_project(tmp_path, "pynq-z2")
    done, _ = run_build_prj(tmp_path, [tcl], fail_run=True)
    assert done.returncode == 1
    line = _one_line(done.stderr)
    assert line.startswith("build_prj.tcl: impl_1 stopped at 40% (route_design ERROR)") and "runme.log" in line
    assert not os.path.exists(out)


@needs_tclsh
def test_build_prj_warns_when_timing_is_not_met(tmp_path):
    _, tcl, out = board_project(tmp_path, "pynq-z2")
    done, _ = run_build_prj(tmp_path, [tcl], wns="-0.4")
    assert done.returncode == 0, done.stderr
    assert "build_prj.tcl: warning: timing not met at 100 MHz (WNS -0.4 ns)" in done.stdout
    assert sorted(os.listdir(out)) == ["e2t.bit", "e2t.hwh"]


# -- (b) project.tcl and the paths it names -----------------------------------------------------

@needs_tclsh
@pytest.mark.parametrize("name", boards.names())
def test_project_tcl_reads_back_as_the_board_data(tmp_path, name):
    b, tcl, out = board_project(tmp_path, name)
    names = "board family part board_part ps axi_lite_port pl_clock clock_mhz ip_repo out_dir project_dir jobs"
    script = (f"source {{{tcl}}}\nforeach v {{{names}}} {{ puts \"$v=[set $v]\" }}\n"
              "puts \"hp=[join $hp_ports ,]\"\n")
    done = subprocess.run([TCLSH], input=script, capture_output=True, text=True, timeout=60)
    got = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert got == {"board": b.name, "family": b.family, "part": b.part, "board_part": b.board_part, "ps": b.ps,
                   "axi_lite_port": b.axi_lite_port, "pl_clock": b.pl_clock, "clock_mhz": f"{b.clock_mhz:g}",
                   "ip_repo": vivado.ip_repo(b, str(tmp_path / "hls")), "out_dir": out,
                   "project_dir": str(tmp_path / "prj"), "jobs": "3", "hp": ",".join(b.hp_ports)}
    with open(tcl) as f:
        assert f"bitstreams/{name}/board.json" in f.readline()


def test_project_tcl_refuses_what_braces_cannot_quote(tmp_path):
    b = boards.board("pynq-z2")
    with pytest.raises(E2TError, match="out_dir .* cannot quote"):
        vivado.project_tcl(b, str(tmp_path), str(tmp_path / "a}b"), str(tmp_path), 2)
    with pytest.raises(E2TError, match="ip_repo .* cannot quote"):
        vivado.project_tcl(b, "C:\\ip", str(tmp_path), str(tmp_path), 2)
    with pytest.raises(E2TError, match="hp_ports .* one with a space"):
        spaced = dataclasses.replace(b, hp_ports=["S_AXI HP0"])
        vivado.project_tcl(spaced, str(tmp_path), str(tmp_path), str(tmp_path), 2)


HLS_STUB = r"""
foreach name {open_project set_top add_files open_solution set_part create_clock config_interface csim_design
              csynth_design cosim_design export_design close_project cd} {
    proc $name args "puts \[join \[list $name {*}\$args\] \\x1f\]"
}
"""


@needs_tclsh
@pytest.mark.parametrize("name", ["pynq-z2", "zcu104"])
def test_ip_repo_is_where_run_hls_tcl_exports(tmp_path, name):
    """run_hls.tcl (recorded, in tclsh) opens its project and solution where vivado.ip_repo says the
    export leaves the IP folder: <out>/<project>/<solution>/impl/ip."""
    b = boards.board(name)
    out = tmp_path / "hls"
    project.prepare(b, str(out))
    cmd = project.command(b, vivado.HLS_STEPS, str(out))
    (tmp_path / "stub.tcl").write_text(HLS_STUB)
    words = cmd[cmd.index("-tclargs") + 1:]
    script = f"source {{{tmp_path / 'stub.tcl'}}}\nset argv {_tcl_list(words)}\nsource {{{cmd[2]}}}\n"
    done = subprocess.run([TCLSH], input=script, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if not line.startswith("run_hls.tcl: ")]
    calls = {c[0]: c[1:] for c in (tuple(line.split("\x1f")) for line in lines)}
    assert calls["cd"] == (str(out),) and "export_design" in calls and "csynth_design" in calls
    assert vivado.ip_repo(b, str(out)) == os.path.join(str(out), calls["open_project"][-1],
                                                       calls["open_solution"][-1], "impl", "ip")


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("plan") / "r8")
    plan, weights, _ = planbuild.from_model("resnet8", 1, 10, 32, "pynq-z2", 32, dataset="digits")
    planbuild.save(folder, plan, weights)
    return folder


def test_dry_run_writes_project_tcl_and_prints_the_commands(plan_dir, tmp_path, capsys):
    out = tmp_path / "overlay"
    assert vivado.main(["--board", "pynq-z2", "--plan", plan_dir, "--out", str(out), "--dry-run"]) == 0
    printed = [ln for ln in capsys.readouterr().out.splitlines() if ": warning: " not in ln]  # a budget warning
    b = boards.board("pynq-z2")
    tcl = os.path.join(vivado.build_dir("pynq-z2"), "project.tcl")
    hls_out = project.default_out("pynq-z2")
    assert printed[0] == f"bitstreams.vivado: wrote {tcl}; would run:"
    assert printed[1] == f"cd {hls_out} && " + " ".join(project.command(b, ["csynth", "export"], hls_out))
    assert printed[2] == (f"cd {vivado.build_dir('pynq-z2')} && vivado -mode batch -notrace -source "
                          f"{vivado.SCRIPT} -tclargs {tcl}")
    with open(tcl) as f:
        text = f.read()
    assert text == vivado.project_tcl(b, vivado.ip_repo(b, hls_out), str(out),
                                      os.path.join(vivado.build_dir("pynq-z2"), "prj"), 2)
    assert not out.exists()  # nothing is built
    # every script the commands name exists
    assert os.path.isfile(vivado.SCRIPT) and vivado.SCRIPT.endswith(os.path.join("bitstreams", "build_prj.tcl"))
    assert os.path.isfile(project.command(b, ["csynth"], hls_out)[2])


@needs_tclsh
def test_generated_project_tcl_passes_build_prj_checks_once_the_ip_is_exported(plan_dir, tmp_path):
    """The dry run's project.tcl for a real plan, with its IP folder made as the HLS export would:
    build_prj.tcl finds every path it names and builds."""
    b = boards.board("pynq-z2")
    hls_out = tmp_path / "hls"
    tcl = tmp_path / "project.tcl"
    tcl.write_text(vivado.project_tcl(b, vivado.ip_repo(b, str(hls_out)), str(tmp_path / "o"), str(tmp_path / "p"), 2))
    done, _ = run_build_prj(tmp_path, [str(tcl)])
    assert done.returncode == 2 and "the HLS IP folder" in _one_line(done.stderr)
    os.makedirs(vivado.ip_repo(b, str(hls_out)))
    done, _ = run_build_prj(tmp_path, [str(tcl)])
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path / "o")) == ["e2t.bit", "e2t.hwh"]


# -- (c) bad input ------------------------------------------------------------------------------

@needs_tclsh
def test_build_prj_refuses_bad_input_with_one_line(tmp_path):
    done, calls = run_build_prj(tmp_path, [str(tmp_path / "missing.tcl")])
    assert done.returncode == 2 and calls == []
    assert _one_line(done.stderr).startswith(f"build_prj.tcl: {tmp_path / 'missing.tcl'} is missing")

    done, calls = run_build_prj(tmp_path, [])
    assert done.returncode == 2 and calls == [] and "expected one argument" in _one_line(done.stderr)

    _, tcl, _ = board_project(tmp_path, "pynq-z2")
    with open(tcl, "a") as f:
        f.write("set family {versal}\n")
    done, calls = run_build_prj(tmp_path, [tcl])
    assert done.returncode == 2 and calls == []
    assert _one_line(done.stderr) == "build_prj.tcl: unknown family 'versal' in " + tcl + " (known: zynq7, zynqmp)"


@needs_tclsh
@pytest.mark.parametrize("line, words", [
    ("set clock_mhz {fast}", "clock_mhz must be a positive number"),
    ("set jobs {0}", "jobs must be a positive integer"),
    ("unset board_part", "does not set 'board_part'"),
    ("set ps {zynq_ultra_ps_e}", "is not the zynq7 PS (processing_system7)"),
    ("set hp_ports {S_AXI_ACP}", "hp port 'S_AXI_ACP' is not a port"),
])
def test_build_prj_checks_every_variable(tmp_path, line, words):
    _, tcl, _ = board_project(tmp_path, "pynq-z2")
    with open(tcl, "a") as f:
        f.write(line + "\n")
    done, calls = run_build_prj(tmp_path, [tcl])
    assert done.returncode == 2 and calls == []
    assert words in _one_line(done.stderr)


@needs_tclsh
def test_build_prj_stops_without_the_board_files_or_the_engine_ip(tmp_path):
    _, tcl, _ = board_project(tmp_path, "zcu104")
    done, calls = run_build_prj(tmp_path, [tcl], "zynqmp", board_parts=False)
    assert done.returncode == 2 and "board part xilinx.com:zcu104:part0:1.1 is not installed" in _one_line(done.stderr)
    assert "create_bd_design" not in [c[0] for c in calls]
    done, calls = run_build_prj(tmp_path, [tcl], "zynqmp", missing_ip=regmap.VLNV)
    assert done.returncode == 2 and f"holds no IP {regmap.VLNV}" in _one_line(done.stderr)
    assert "create_bd_design" not in [c[0] for c in calls]


# -- (d) the tools ------------------------------------------------------------------------------

class FakeRun:
    """subprocess.run for `<tool> -version`: prints the version line of each tool's release."""

    BANNERS = {"vivado": "Vivado v{v} (64-bit)\nTool Version Limit: 2023.10",
               "vitis_hls": "Vitis HLS - High-Level Synthesis from C, C++ and OpenCL v{v} (64-bit)"}

    def __init__(self, versions: dict):
        self.versions, self.calls = versions, []

    def __call__(self, cmd, **kwargs):
        self.calls.append(cmd)
        tool = os.path.basename(cmd[0])
        return subprocess.CompletedProcess(cmd, 0, self.BANNERS[tool].format(v=self.versions[tool]), "")


def _which(*present):
    return lambda tool: f"/opt/Xilinx/bin/{tool}" if tool in present else None


def test_check_tools_accepts_2023_2():
    run = FakeRun({"vivado": "2023.2", "vitis_hls": "2023.2"})
    assert vivado.check_tools(_which("vivado", "vitis_hls"), run) == {
        "vivado": {"path": "/opt/Xilinx/bin/vivado", "version": "2023.2"},
        "vitis_hls": {"path": "/opt/Xilinx/bin/vitis_hls", "version": "2023.2"}}
    assert run.calls == [["/opt/Xilinx/bin/vivado", "-version"], ["/opt/Xilinx/bin/vitis_hls", "-version"]]


def test_check_tools_refuses_a_missing_vivado():
    with pytest.raises(E2TError, match=r"^vivado is not on PATH: source .*settings64.sh"):
        vivado.check_tools(_which("vitis_hls"), FakeRun({"vitis_hls": "2023.2"}))


@pytest.mark.parametrize("tool", ["vivado", "vitis_hls"])
def test_check_tools_refuses_2021_2(tool):
    versions = {"vivado": "2023.2", "vitis_hls": "2023.2", tool: "2021.2"}
    with pytest.raises(E2TError, match=rf"^{tool} at /opt/Xilinx/bin/{tool} is v2021.2, older than the 2022.1"):
        vivado.check_tools(_which("vivado", "vitis_hls"), FakeRun(versions))


def test_check_tools_refuses_an_unreadable_version():
    def run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "segmentation fault")
    with pytest.raises(E2TError, match="printed no version"):
        vivado.check_tools(_which("vivado", "vitis_hls"), run)


# -- (e) the command line -----------------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "bitstreams.vivado", *args], cwd=project.ROOT, capture_output=True,
                          text=True, timeout=120)


def test_cli_missing_plan_is_one_line_and_exit_2():
    done = _cli("--board", "pynq-z2", "--plan", "/nonexistent")
    assert done.returncode == 2 and done.stdout == ""
    line = _one_line(done.stderr)
    assert line.startswith("bitstreams.vivado: ") and "Traceback" not in done.stderr
    assert "/nonexistent" in line or "not on PATH" in line  # the tools are checked first
    done = _cli("--board", "pynq-z2", "--plan", "/nonexistent", "--dry-run")
    assert done.returncode == 2
    assert _one_line(done.stderr) == "bitstreams.vivado: /nonexistent: no such plan (e2t plan or e2t export writes one)"


def test_cli_refuses_a_plan_for_another_board_and_an_unknown_board(plan_dir):
    done = _cli("--board", "zcu104", "--plan", plan_dir, "--dry-run")
    assert done.returncode == 2
    assert _one_line(done.stderr) == (f"bitstreams.vivado: the plan in {plan_dir} is for board 'pynq-z2', not 'zcu104': "
                                      "make one with e2t plan --board zcu104")
    done = _cli("--board", "pynq-z3", "--plan", plan_dir, "--dry-run")
    assert done.returncode == 2 and "unknown board 'pynq-z3'" in _one_line(done.stderr)


def test_build_stops_before_anything_when_the_tools_are_missing(plan_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(E2TError, match="^vivado is not on PATH"):
        vivado.build("pynq-z2", plan_dir, str(tmp_path / "o"), log=lambda m: None)
    assert not (tmp_path / "o").exists()


def test_build_refuses_an_engine_over_the_board_s_budget(plan_dir, tmp_path, monkeypatch):
    """After the tools and the plan, before Vitis HLS: a configuration hls/resources.py puts over
    the budget is one line with the resource and both numbers; --dry-run only warns."""
    from hls import resources
    monkeypatch.setattr(vivado, "check_tools", lambda *a, **k: {})
    monkeypatch.setattr(resources, "totals", lambda b: [resources.Use("dsp", 300, 220), resources.Use("lut", 1, 9)])
    with pytest.raises(E2TError, match=r"over the board's budget: DSP 300 > 220 \(modeled"):
        vivado.build("pynq-z2", plan_dir, str(tmp_path / "o"), log=lambda m: None)
    assert not (tmp_path / "o").exists()
    lines = []
    vivado.build("pynq-z2", plan_dir, str(tmp_path / "o"), log=lines.append, dry_run=True)
    assert lines[0].startswith("bitstreams.vivado: warning: the engine configuration of pynq-z2 is over")
