"""Creates (or re-uses) the Python venv with the pinned SDKs of requirements.txt.

Usage: python3 venv.py VENV_DIR REQUIREMENTS

Run with the machine's python3. Prints the venv's python interpreter on the last line of stdout.
The venv is re-used while its stamp file matches the requirements and the Python version;
otherwise it is deleted and built again. An exclusive lock on VENV_DIR.lock serialises
concurrent callers (parallel tests, two test processes), so only one of them builds.
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys

STAMP = ".sdk-stamp"


def stamp_for(requirements: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(requirements)
    digest.update(sys.version.encode())
    return digest.hexdigest()


def build(venv: str, requirements_path: str) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    except subprocess.CalledProcessError:
        sys.exit(
            f"cannot create a venv with {sys.executable} -m venv "
            "(on Debian: apt-get install python3-venv)"
        )
    python = os.path.join(venv, "bin", "python")
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--only-binary=:all:",
            "-r",
            requirements_path,
        ],
        check=True,
    )
    subprocess.run([python, "-m", "pip", "check", "--disable-pip-version-check"], check=True)


def main() -> None:
    venv, requirements_path = os.path.abspath(sys.argv[1]), sys.argv[2]
    with open(requirements_path, "rb") as f:
        wanted = stamp_for(f.read())
    os.makedirs(os.path.dirname(venv), exist_ok=True)
    with open(venv + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp_path = os.path.join(venv, STAMP)
        try:
            with open(stamp_path) as f:
                current = f.read().strip()
        except OSError:
            current = None
        if current != wanted:
            print(f"building the SDK venv in {venv}", file=sys.stderr)
            build(venv, requirements_path)
            with open(stamp_path, "w") as f:
                f.write(wanted + "\n")
    print(os.path.join(venv, "bin", "python"))


if __name__ == "__main__":
    main()
