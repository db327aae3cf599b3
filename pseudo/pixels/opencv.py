"""OpenCV, set up once for processes that fork workers: import ``cv2`` from here."""

import cv2

# OpenCV's own thread pool does not survive a fork: a worker forked from a process that has
# used it hangs at its next OpenCV call. Sequential from the start (before any OpenCV call),
# so that every process can fork workers whatever it ran before; the pool gives parallelism.
cv2.setNumThreads(0)

__all__ = ["cv2"]
