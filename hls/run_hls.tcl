# Vitis HLS project of the e2t training engine for one board: C simulation, C synthesis,
# C/RTL co-simulation and export as a Vivado IP (VLNV e2t:hls:e2t_engine:1.0).
#
# Normally run by `python -m hls.project` (or `make -C hls csim|csynth|cosim|export|all`), which
# writes the board's engine_config.h first and then runs, in the output folder:
#
#   vitis_hls -f hls/run_hls.tcl -tclargs board=pynq-z2 part=xc7z020clg400-1 clock_mhz=100 \
#       steps=csim,csynth,cosim,export out=<folder> config_dir=<folder with engine_config.h>
#
# Every parameter is a key=value word after -tclargs, or else an environment variable
# E2T_HLS_<KEY> (E2T_HLS_BOARD, E2T_HLS_PART, ...). board, part, clock_mhz and config_dir are
# required (hls/boards.py is the one place they are defined); steps defaults to all four, out to
# build/hls_project/<board>. Syntax: Vitis HLS 2022.1 and later (UG1399).
#
# The arbitrary-precision types (ap_int.h) come from Vitis HLS itself: the sources are compiled
# with -DE2T_AP_TYPES and no other ap_types include path.

set e2t_hls_dir [file dirname [file normalize [info script]]]
set e2t_root [file dirname $e2t_hls_dir]
set e2t_all_steps {csim csynth cosim export}

proc e2t_fail {message} {
    puts stderr "run_hls.tcl: $message"
    exit 2
}

# key=value from the -tclargs words, else $E2T_HLS_<KEY>, else `default` ("" = required).
proc e2t_param {key {default ""}} {
    if {[info exists ::argv]} {
        foreach word $::argv {
            if {[string first "${key}=" $word] == 0} {
                return [string range $word [expr {[string length $key] + 1}] end]
            }
        }
    }
    set var "E2T_HLS_[string toupper $key]"
    if {[info exists ::env($var)] && $::env($var) ne ""} {
        return $::env($var)
    }
    if {$default eq ""} {
        e2t_fail "missing parameter '$key': pass $key=... after -tclargs or set $var (python -m hls.project does both for you)"
    }
    return $default
}

set board [e2t_param board]
set part [e2t_param part]
set clock_mhz [e2t_param clock_mhz]
set config_dir [file normalize [e2t_param config_dir]]
set out [file normalize [e2t_param out [file join $e2t_root build hls_project $board]]]
set steps [split [string map {" " ""} [e2t_param steps [join $e2t_all_steps ,]]] ,]

foreach step $steps {
    if {[lsearch -exact $e2t_all_steps $step] < 0} {
        e2t_fail "unknown step '$step' (known: [join $e2t_all_steps {, }])"
    }
}
if {![string is double -strict $clock_mhz] || $clock_mhz <= 0} {
    e2t_fail "clock_mhz must be a positive number, got '$clock_mhz'"
}
set period_ns [format %g [expr {1000.0 / $clock_mhz}]]

# The configuration must be the board's (python -m hls.boards <board> writes it).
set config_h [file join $config_dir engine_config.h]
if {![file exists $config_h]} {
    e2t_fail "$config_h is missing: write it with `python -m hls.boards $board > $config_h`"
}
set fh [open $config_h r]
set config_text [read $fh]
close $fh
if {![regexp {#define E2T_BOARD "([^"]*)"} $config_text -> config_board] || $config_board ne $board} {
    e2t_fail "$config_h is not the configuration of board '$board'"
}

set cflags "-DE2T_AP_TYPES -I[file join $e2t_root hls include] -I[file join $e2t_root hls src] -I$config_dir"
set solution "solution_[string map {- _ . _} $board]"
set project_dir [file join $out e2t_engine_prj]
set ip_zip [file join $out ip e2t_engine_[string map {- _} $board].zip]

puts "run_hls.tcl: board $board, part $part, clock $clock_mhz MHz (period $period_ns ns), steps [join $steps ,], project $project_dir"

file mkdir $out
cd $out

# Project: sources, testbench, top. -reset only forgets the file list (solutions stay).
open_project -reset e2t_engine_prj
set_top e2t_engine
add_files -cflags $cflags [file join $e2t_root hls src e2t_engine.cpp]
add_files -tb -cflags $cflags [file join $e2t_root hls tb e2t_engine_tb.cpp]

# Solution: a fresh one when synthesizing; otherwise the previous synthesis is reused, so that
# `steps=cosim` or `steps=export` can follow an earlier `steps=csynth`.
if {[lsearch -exact $steps csynth] >= 0} {
    open_solution -reset -flow_target vivado $solution
} else {
    open_solution -flow_target vivado $solution
}
set_part $part
create_clock -period $period_ns -name default
# 64-bit m_axi addresses: the register map (hls/regmap.py) gives every buffer address two data words;
# buffers aligned to 64 bytes (the boards' ddr_align, host/plan/layout.py) let the int8 / int16 ports widen
# to full AXI beats.
config_interface -m_axi_addr64 -m_axi_alignment_byte_size 64

proc e2t_step {name script} {
    puts "run_hls.tcl: --- $name ---"
    if {[catch {uplevel 1 $script} message]} {
        puts stderr "run_hls.tcl: $name failed: $message"
        exit 1
    }
}

if {[lsearch -exact $steps csim] >= 0} {
    e2t_step csim {csim_design -O -clean}
}
if {[lsearch -exact $steps csynth] >= 0} {
    e2t_step csynth {csynth_design}
    puts "run_hls.tcl: synthesis report: [file join $project_dir $solution syn report e2t_engine_csynth.rpt]"
}
if {[lsearch -exact $steps cosim] >= 0} {
    e2t_step cosim {cosim_design -O -rtl verilog -tool xsim -trace_level none}
}
if {[lsearch -exact $steps export] >= 0} {
    file mkdir [file dirname $ip_zip]
    e2t_step export {
        export_design -format ip_catalog -rtl verilog \
            -vendor e2t -library hls -ipname e2t_engine -version 1.0 \
            -display_name "e2t training engine ($board)" \
            -description "E2-Train on-device training engine: int8 conv forward, backward to the input, PSG weight gradient, sign-momentum update (docs/numerics.md); board $board, $clock_mhz MHz" \
            -output $ip_zip
    }
    puts "run_hls.tcl: IP e2t:hls:e2t_engine:1.0: $ip_zip"
}

close_project
puts "run_hls.tcl: done: [join $steps ,] for $board"
exit 0
