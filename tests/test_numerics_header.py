"""The generated C++ header: up to date with contract/numerics.py and bit-exact with it (g++)."""
import os
import shutil
import subprocess

import numpy as np
import pytest

import naive
from hls import gen_numerics
from contract import numerics as nx

HERE = os.path.dirname(os.path.abspath(__file__))


def test_committed_header_is_current():
    with open(gen_numerics.HEADER) as f:
        assert f.read() == gen_numerics.header_text(), "run: python -m hls.gen_numerics"


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    exe = str(tmp_path_factory.mktemp("cpp") / "check_numerics")
    subprocess.run(["g++", "-O2", "-std=c++14", "-Wall", "-Werror", "-I", os.path.dirname(gen_numerics.HEADER),
                    os.path.join(HERE, "cpp", "check_numerics.cpp"), "-o", exe], check=True)
    return lambda text: subprocess.run([exe], input=text, capture_output=True, text=True, check=True).stdout.split("\n")


def test_cpp_elementwise_ops_equal_numpy(checker):
    rng = np.random.default_rng(11)
    v, s = rng.integers(-2**40, 2**40, 300), rng.integers(-4, 30, 300)
    x = np.arange(-128, 128)
    gm, gf = rng.integers(-2**35, 2**35, 300), rng.integers(-2**39, 2**39, 300)
    gm[:3] = [0, 5, -5]
    T = rng.integers(0, 2**35, 300)
    T[:3] = [0, 5, 6]
    cases = ([f"R {a} {b}" for a, b in zip(v, s)] + [f"M {a}" for a in x]
             + [f"P {a} {b} {t}" for a, b, t in zip(gm, gf, T)]
             + [f"Q {a} {b} {nx.ratio_fixed(0.3)} {np.abs(gm).max()}" for a, b in zip(gm, gf)])
    out = checker("\n".join(cases) + "\n")
    expect = (nx.rshift_round(v, s).tolist() + nx.msb(x).tolist()
              + [int(nx.psg_select(np.array([a]), np.array([b]), T=int(t))[0][0]) for a, b, t in zip(gm, gf, T)]
              + nx.psg_select(gm, gf, R=nx.ratio_fixed(0.3))[0].tolist())
    assert [int(o) for o in out[:len(expect)]] == expect


@pytest.mark.parametrize("e_w", [-48, -24, -12])
def test_cpp_sign_update_equals_numpy(checker, e_w):
    w, buf, sign = naive.update_operands(e_w + 50, 400)
    k = nx.UpdateConstants.from_floats(0.1, 1e-4, 0.9)
    out = checker("".join(f"U {a} {b} {c} {e_w} {k.LR} {k.WD} {k.MU}\n" for a, b, c in zip(w, buf, sign)))
    got = np.array([[int(t) for t in line.split()] for line in out if line])
    for i in range(len(w)):
        wn, bn, sat = nx.sign_update(w[i:i + 1], e_w, buf[i:i + 1], sign[i:i + 1], k)
        assert got[i].tolist() == [int(wn[0]), int(bn[0]), sat], i
