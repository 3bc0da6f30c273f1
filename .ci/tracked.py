"""Did the lane's `edge run --json` process every frame of the astronaut video and track her?
python .ci/tracked.py RUN_JSON FRAMES (exit 1 with the reason if not)"""

import json
import sys

s = json.load(open(sys.argv[1]))
print(json.dumps({k: s[k] for k in ("frames", "tracks", "alerts_raised", "fps", "runtime")}))
if s["frames"] != int(sys.argv[2]):
    sys.exit(f"{s['frames']} frames, not {sys.argv[2]}")
if s["tracks"] < 1:
    sys.exit("no face was tracked")
