import subprocess
import sys

from myelin import __version__
from myelin.cli import main


def test_version_and_info_through_the_entry_point():
    out = subprocess.run([sys.executable, "-m", "myelin", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == f"myelin {__version__}"
    out = subprocess.run([sys.executable, "-m", "myelin", "info"], capture_output=True, text=True,
                         check=True)
    assert "fisher-exact" in out.stdout and "torch" in out.stdout


def test_unknown_command_and_no_command(capsys):
    assert main([]) == 2
    proc = subprocess.run([sys.executable, "-m", "myelin", "frobnicate"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
