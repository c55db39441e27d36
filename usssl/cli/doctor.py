"""``usssl doctor``: versions, codecs, DICOM decoders, GPU and tracking set-up, in one screen."""

from __future__ import annotations

import argparse
import os
import shutil


def cmd_doctor(args: argparse.Namespace) -> int:
    import platform

    from usssl.engine.tracking import describe_threads, package_versions, shown_uri, tracking_problem

    print(f"python      {platform.python_version()} on {platform.system()} {platform.machine()}, "
          f"{os.cpu_count()} CPU(s)")
    for name, version in package_versions().items():
        print(f"{name.split('-')[0]:<12}{'NOT INSTALLED' if version == 'missing' else version}")
    print(f"threads     {describe_threads()} (results can differ with the thread count)")
    try:
        import av

        codecs = {c: (c in av.codecs_available) for c in ("h264", "libx264", "hevc", "mpeg4", "aac", "mp3")}
        print("codecs      " + ", ".join(f"{c}: {'yes' if ok else 'no'}" for c, ok in codecs.items()))
    except ImportError:
        print("codecs      PyAV missing: video cannot be read")
    try:
        from pydicom.pixels import get_decoder

        decoders = {"JPEG baseline": "1.2.840.10008.1.2.4.50", "JPEG lossless": "1.2.840.10008.1.2.4.70",
                    "JPEG-LS": "1.2.840.10008.1.2.4.80", "JPEG 2000": "1.2.840.10008.1.2.4.90",
                    "RLE": "1.2.840.10008.1.2.5"}
        print("dicom       " + ", ".join(f"{n}: {'yes' if get_decoder(uid).is_available else 'no'}"
                                         for n, uid in decoders.items()))
    except ImportError:
        print("dicom       pydicom missing: DICOM cannot be read")
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        print(f"gpu         {len(names)}: {', '.join(names)}; bf16: {torch.cuda.is_bf16_supported()}")
    else:
        print("gpu         none (CPU only; set trainer.accelerator: cpu)")
    print(f"espeak-ng   {'found' if shutil.which('espeak-ng') else 'not found (voice: espeak unavailable)'}")
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):  # checked: a server that is down is the usual problem
        uri = shown_uri(uri) + (f" (NOT reachable: {why})" if (why := tracking_problem(uri)) else "")
    print(f"tracking    {uri or 'sqlite:///<output_dir>/mlflow.db (default; MLFLOW_TRACKING_URI unset)'}")
    key = "USSSL_SUBJECT_KEY set" if os.environ.get("USSSL_SUBJECT_KEY") else "key file (created on first ingest)"
    print(f"subject key {key}")
    return 0
