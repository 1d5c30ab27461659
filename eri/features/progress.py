"""Extraction's progress bar, in frames: a bar per video sat at 0/3 for two minutes on three 20 s clips.

The bar counts the frames decoded and processed, moved once per decoded chunk (`faceflow.Decoded`,
sent by decode workers too), with "video k/N" in its postfix. Its total is the frames of the videos
started so far (the container's count, then the real one when a video ends) plus the mean of those
times the videos still to decode, so it is exact once the last video starts and needs no pass over
every file before the first frame. A job without face streams (audio or file streams only) decodes no
frames: its bar counts videos.
"""

from __future__ import annotations

from tqdm import tqdm


class FrameBar:
    def __init__(self, n_videos: int, frame_videos: int, desc: str, disable: bool = False):
        """``n_videos``: every video of the job; ``frame_videos``: those whose frames will be decoded."""
        self.frames = frame_videos > 0
        self.n, self.k, self.left = n_videos, 0, frame_videos
        self.finished, self.finished_frames = 0, 0  # videos decoded, and their frames
        self.done, self.expected = 0, None  # the current video
        self.bar = tqdm(total=None if self.frames else n_videos, desc=desc, unit="frame" if self.frames else "video",
                        disable=disable, unit_scale=self.frames)

    def video(self, decodes: bool) -> None:
        """The next video starts; ``decodes``: its frames will be decoded."""
        self.k += 1
        self.done, self.expected = 0, None
        if decodes:
            self.left -= 1
        self.bar.set_postfix_str(f"video {self.k}/{self.n}", refresh=False)

    def tick(self, frames: int, expected: int | None) -> None:
        """The current video has ``frames`` frames done, of about ``expected``."""
        if self.expected is None and expected:
            self.expected = expected
            self._total()
        self.bar.update(frames - self.done)
        self.done = frames

    def end(self, frames: int, note: str = "") -> None:
        """The current video is finished with ``frames`` frames (0: none decoded, or not a frame job)."""
        if not self.frames:
            self.bar.update(1)
        elif frames or self.done:
            frames = frames or self.done
            self.bar.update(frames - self.done)
            self.finished += 1
            self.finished_frames += frames
            self.done, self.expected = 0, None
            self._total()
        self.bar.set_postfix_str(f"video {self.k}/{self.n}" + (f", {note}" if note else ""))

    def _total(self) -> None:
        known = self.finished_frames + (self.expected or self.done)
        seen = self.finished + (1 if self.expected else 0)
        self.bar.total = int(known + (known / seen) * self.left) if seen else None
        self.bar.refresh()

    @property
    def n_done(self) -> int:
        return int(self.bar.n)

    @property
    def total(self) -> int | None:
        return self.bar.total

    def close(self) -> None:
        self.bar.close()
