"""File formats of the synthetic corpus: MP4 (H.264 + AAC) and Ultrasound Multi-frame DICOM.

The MP4 carries no patient data (only the muxer's own tags); the DICOM carries the invented PHI
on purpose, so that de-identification can be tested on it.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from usssl.data.synth.scan import ScanData

US_MULTIFRAME_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.3.1"
"""Ultrasound Multi-frame Image Storage."""


def write_mp4(path: Path, frames: np.ndarray, audio: np.ndarray | None, fps: int,
              audio_rate: int, crf: int = 18) -> Path:
    """Write gray ``frames`` uint8 (T, H, W) as H.264 yuv420p and ``audio`` float32 (N,) as AAC.

    H and W must be even (4:2:0 chroma).
    Audio sample 0 is at the first frame's time (the AAC priming delay is compensated by the
    MP4 edit list, which decoders apply).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w = frames.shape
    with av.open(str(path), mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}  # tiny frames:
        # one x264 thread is faster, and generate() already runs scans in parallel
        sound = None
        if audio is not None:
            sound = container.add_stream("aac", rate=audio_rate, layout="mono")
        # gray (full range) → yuv420p (limited "tv" range, as swscale does), neutral chroma
        luma = np.rint(16 + np.arange(256) * (219 / 255)).astype(np.uint8)[frames]
        chroma = np.full((h // 2, w), 128, np.uint8)  # U then V planes, (H/2 · W/2) each
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(np.concatenate([luma[i], chroma]), format="yuv420p")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            block = 1024
            for s in range(0, len(audio), block):
                chunk = np.ascontiguousarray(audio[None, s : s + block], dtype=np.float32)
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                af.sample_rate, af.pts = audio_rate, s
                container.mux(sound.encode(af))
            container.mux(sound.encode(None))
    return path


def write_dicom(path: Path, scan: ScanData, seed: int, spacing_cm: float) -> Path:
    """Write ``scan`` as an uncompressed Ultrasound Multi-frame DICOM with invented PHI.

    The single ultrasound region covers the fan's bounding box; DICOM's Max corners are
    inclusive, so RegionLocationMaxX1 = bbox x1 − 1.
    """
    path.parent.mkdir(parents=True, exist_ok=True)

    def uid(kind: str) -> str:  # deterministic: the same corpus gets the same UIDs
        return generate_uid(entropy_srcs=["usssl-synth", str(seed), scan.name, kind])

    sop_uid = uid("sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_MULTIFRAME_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = US_MULTIFRAME_SOP_CLASS, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
    ds.Modality, ds.Manufacturer = "US", "usssl synthetic"
    info = scan.subject
    ds.PatientName, ds.PatientID = info.patient_name, info.patient_id
    ds.PatientBirthDate, ds.PatientSex = info.birth_date, "F"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = info.study_date
    ds.StudyTime = "101500"
    ds.InstitutionName = info.institution
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, 1
    ds.BurnedInAnnotation = "YES"

    t, h, w = scan.frames.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns, ds.NumberOfFrames = h, w, t
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime = round(1000.0 / scan.fps, 6)
    ds.CineRate = scan.fps
    ds.RecommendedDisplayFrameRate = scan.fps
    ds.FrameIncrementPointer = 0x00181063  # FrameTime

    region = Dataset()
    x0, y0, x1, y1 = scan.fan.bbox
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = x0, y0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = x1 - 1, y1 - 1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX = region.PhysicalDeltaY = spacing_cm
    region.ReferencePixelX0, region.ReferencePixelY0 = (int(round(v)) for v in scan.fan.apex)
    ds.SequenceOfUltrasoundRegions = Sequence([region])

    ds.PixelData = np.ascontiguousarray(scan.frames).tobytes()
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path
