"""A 640x480 MJPEG test video of scikit-image's astronaut walking slowly to the right, for the
CI lanes that run an installed monitor on it: python .ci/astronaut_video.py PATH FRAMES"""

import sys

import cv2
import numpy as np
from skimage import data

path, frames = sys.argv[1], int(sys.argv[2])
face = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (400, 400), interpolation=cv2.INTER_AREA)
writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 15, (640, 480))
for i in range(frames):
    frame = np.full((480, 640, 3), 128, np.uint8)
    x = 60 + 2 * i  # she walks slowly to the right
    frame[40:440, x:x + 400] = face
    writer.write(frame)
writer.release()
print(f"wrote {path}")
