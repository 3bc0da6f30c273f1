"""Config edges: which source wins, an ROI too small for a face, the effective config's TOML
loading back, a config saved with a byte-order mark, and one a power cut left empty or zeroed."""

from __future__ import annotations

import re
import tomllib

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edge import config  # noqa: E402
from edge.config import ConfigError, load_config, to_dict  # noqa: E402
from edge.configdoc import effective_toml  # noqa: E402
from edge.pipeline.detectors import create_detector  # noqa: E402
from edge.pipeline.detectors.regions import Roi, windows, with_regions  # noqa: E402
from edge.pipeline.sources import BootCamera, open_source  # noqa: E402
from tests.conftest import run_cli  # noqa: E402


@pytest.fixture(scope="module")
def vga_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("vga") / "vga.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    for i in range(3):
        writer.write(np.full((480, 640, 3), 90 + i, np.uint8))
    writer.release()
    return path



@pytest.fixture
def closed(tmp_path, monkeypatch):
    """A folder this user may not enter (as the service's 0750 /var/lib/queue-mood is to the user
    pi): whatever lies under it cannot be looked at; root is refused nothing, so stat is patched."""
    from pathlib import Path

    folder, real_stat = tmp_path / "closed", Path.stat

    def stat(self, **kwargs):
        if folder in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    return folder

# ---------------------------------------------------------------------------- which source

def test_a_camera_wins_over_the_path_in_the_same_config(vga_video):
    """source.path is 'used when camera is unset': a camera in the file, with a path, is the camera."""
    source = open_source(0, str(vga_video), wait_for_camera=True)  # waited for: not opened here
    assert isinstance(source, BootCamera)


def test_a_camera_device_path_is_a_live_camera_not_a_recording(tmp_path, monkeypatch):
    """--source /dev/video0, or a stable /dev/v4l/by-id link to it, is watched and reopened like
    --camera 0; as a recording it ended at the first failed read."""
    from edge.pipeline import sources

    monkeypatch.setattr(sources, "DEV", tmp_path)  # a stand-in /dev: the real one has no camera here
    (tmp_path / "video2").write_bytes(b"")
    (tmp_path / "by-id").mkdir()
    (tmp_path / "by-id" / "usb-cam-video-index0").symlink_to(tmp_path / "video2")
    for path in (tmp_path / "video2", tmp_path / "by-id" / "usb-cam-video-index0"):
        source = open_source(None, str(path), wait_for_camera=True)
        assert isinstance(source, sources.DeviceCamera) and source.wait_first, path
    assert sources.video_device_index(str(tmp_path / "video2")) == 2
    assert sources.video_device_index(str(tmp_path / "video2x")) is None
    assert sources.video_device_index("clip.mp4") is None


def test_a_camera_named_by_its_device_is_looked_up_at_each_open(tmp_path, monkeypatch):
    """A USB camera replugged while edge held its node comes back as another /dev/videoN, and its
    /dev/v4l/by-id link is missing while it is unplugged (or at boot, before udev made it): edge
    opened the N it found at the start for ever, and refused a missing link as a missing recording.
    The device is always OpenCV's, even where a Pi camera has the same index."""
    from edge.errors import UserError
    from edge.pipeline import sources

    monkeypatch.setattr(sources, "DEV", tmp_path)
    monkeypatch.setattr(sources.PiCamera, "available", staticmethod(lambda index: True))
    opened = []
    monkeypatch.setattr(sources.OpenCVCamera, "_open", lambda self: opened.append(self.device))
    link = tmp_path / "by-id" / "usb-cam-video-index0"
    link.parent.mkdir()

    source = open_source(None, str(link), wait_for_camera=True)  # unplugged at the start: a camera to wait for
    assert isinstance(source, sources.DeviceCamera)
    with pytest.raises(UserError, match="is the camera plugged in"):
        source._open()
    with pytest.raises(UserError, match="is the camera plugged in"):  # at a terminal: one sentence, not a wait
        with open_source(None, str(link)):
            pass
    for n in (0, 2):  # plugged in as video0, then replugged as video2
        (tmp_path / f"video{n}").write_bytes(b"")
        link.unlink(missing_ok=True)
        link.symlink_to(tmp_path / f"video{n}")
        source._open()
    assert opened == [0, 2]
    assert str(link) in source.describe()


def test_a_config_without_a_source_says_which_keys_to_set(tmp_path):
    """A config whose [source] lost its lines said only to pass --camera or --source (an empty file is
    refused as a power cut's, below)."""
    sourceless = tmp_path / "config.toml"
    sourceless.write_text("[source]\n", encoding="utf-8")
    r = run_cli("run", "--config", sourceless, "--max-frames", 1)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "No source given; set [source] camera or path in the config" in r.stderr, r.stderr


def test_a_recording_under_a_folder_this_user_cannot_enter_is_one_sentence(closed):
    from edge.errors import UserError

    with pytest.raises(UserError, match=r"Source .*clip\.mp4 cannot be reached \(Permission denied\); run as a user"):
        open_source(None, str(closed / "clip.mp4"))

def test_a_config_or_model_under_a_folder_this_user_cannot_enter_is_one_sentence(closed):
    """`edge run --config /root/store.toml` (or --model there) as the user pi was a PermissionError traceback."""
    from edge.errors import UserError

    with pytest.raises(ConfigError, match=r"Config file .*store\.toml cannot be reached by this user \(Permission denied\)"):
        load_config(closed / "store.toml")
    with pytest.raises(UserError, match=r"Model file .*run1 cannot be reached by this user \(Permission denied\)"):
        config.model_file(closed / "run1")


def test_a_recording_this_user_may_not_read_says_so_not_damaged(tmp_path, monkeypatch):
    """The service runs as its own user: a recording copied in with mode 600 was "missing, damaged
    or in a format OpenCV cannot decode" (found in a review). Root reads it anyway, so there the
    refusal is the one a user without the right would meet."""
    import builtins
    import os

    from edge import paths
    from edge.errors import UserError

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0" * 64)
    clip.chmod(0)
    if os.geteuid() == 0:
        def refused(path, *a, **k):
            if str(path) == str(clip):
                raise PermissionError(13, "Permission denied", str(path))
            return builtins.open(path, *a, **k)

        monkeypatch.setattr(paths, "open", refused, raising=False)
    with pytest.raises(UserError, match=r"Video .*clip\.mp4 cannot be read \(Permission denied\); make it readable"):
        open_source(None, str(clip))


def test_a_source_on_the_command_line_replaces_the_files_whichever_kind(tmp_path, vga_video):
    with_path = tmp_path / "p.toml"
    with_path.write_text(f'[source]\npath = "{vga_video.name}"\n')
    cfg = load_config(with_path, {"source.camera": 0})  # edge run --config p.toml --camera 0
    assert (cfg.source.camera, cfg.source.path) == (0, "")
    with_camera = tmp_path / "c.toml"
    with_camera.write_text("[source]\ncamera = 2\n")
    cfg = load_config(with_camera, {"source.path": str(vga_video)})  # edge run --config c.toml --source vga.avi
    assert (cfg.source.camera, cfg.source.path) == (None, str(vga_video))
    assert load_config(with_path, {"source.path": "other.mp4"}).source.path == "other.mp4"


def test_a_camera_and_a_source_both_on_the_command_line_is_one_sentence(vga_video):
    r = run_cli("run", "--camera", 0, "--source", vga_video, "--max-frames", 1)
    assert r.returncode == 2 and r.stderr.strip() == \
        f"error: --camera 0 and --source {vga_video} name two sources; give one of them."


# ---------------------------------------------------------------------------- files the program keeps

def test_a_history_db_that_is_a_folder_is_refused_when_the_config_loads(tmp_path):
    with pytest.raises(ConfigError, match=r"status\.history_db.*a file, not a folder \(e\.g\. .*history\.sqlite\)"):
        load_config(None, {"status.history_db": str(tmp_path)})


def test_a_spool_dir_under_a_folder_this_user_cannot_enter_loads(tmp_path, closed):
    """/var/lib/queue-mood is the service user's (0750): a copy of its config run by the user pi must
    load (the spool says at run time what it cannot write), not end in a PermissionError traceback."""
    assert load_config(None, {"sinks.spool_dir": str(closed / "spool")}).sinks.spool_dir == str(closed / "spool")
    with pytest.raises(ConfigError, match=r"sinks\.spool_dir.*not a file"):
        (tmp_path / "afile").write_text("")
        load_config(None, {"sinks.spool_dir": str(tmp_path / "afile")})


# ---------------------------------------------------------------------------- an ROI too small

def test_an_roi_too_small_for_a_face_is_one_sentence_not_a_crash_of_the_frame_loop(tmp_path, vga_video):
    cfg = tmp_path / "narrow.toml"
    cfg.write_text("[source]\nroi = [0.998, 0, 0.002, 1]\n")
    r = run_cli("run", "--config", cfg, "--source", vga_video, "--max-frames", 2, env={"HOME": str(tmp_path)})
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(errors) == 1, r.stderr
    assert "source.roi" in errors[0] and f"at least {config.MIN_ROI:g}" in errors[0]


@pytest.mark.parametrize("roi", [[0.998, 0, 0.002, 1], [0, 0, 1, 0.05], [0.5, 0.5, 0.01, 0.01]])
def test_an_roi_narrower_or_lower_than_a_face_is_refused(roi):
    with pytest.raises(ConfigError, match=r"source\.roi.*w and h at least .*cannot hold a face"):
        load_config(None, {"source.roi": roi})


def test_an_roi_just_big_enough_holds_the_smallest_face_at_320x240():
    m = config.MIN_ROI
    cfg = load_config(None, {"source.roi": [1 - m, 1 - m, m, m]})
    for w, h in ((320, 240), (240, 320)):  # turned or not
        x0, y0, x1, y1 = Roi.from_list(cfg.source.roi).pixels(w, h)
        assert min(x1 - x0, y1 - y0) >= cfg.detector.min_face_px


@pytest.mark.parametrize("size", [(640, 480), (320, 240), (16, 16), (3, 2), (1, 1)])
@pytest.mark.parametrize("roi", [Roi(), Roi(0.998, 0, 0.002, 1), Roi(0.9999, 0.9999, 0.0001, 0.0001)])
def test_tiles_are_never_empty_whatever_the_frame_size(size, roi):
    """The frame size is known only at run time: no ROI and tiling may cut an empty window."""
    w, h = size
    for x0, y0, x1, y1 in windows(w, h, roi, 8, 8, 0.7, whole=True):
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h


def test_the_detector_on_a_one_pixel_roi_finds_nothing_and_does_not_raise():
    detector = with_regions(create_detector(load_config(None).detector), [0.998, 0, 0.002, 1], (4, 3), 0.25, True)
    assert detector.detect(np.zeros((480, 640, 3), np.uint8)) == []


# ---------------------------------------------------------------------------- effective config round trip

def test_the_effective_config_loads_back_with_keys_that_are_not_bare(tmp_path):
    given = tmp_path / "in.toml"
    given.write_text('device_name = "Kasse 😀"\n'
                     '[status]\nalert_advice = "Hilfe\\u007f an Kasse 2"\n'
                     '[sinks.webhook]\nurl = "https://h/x"\nheaders = {"X.Api-Key" = "a", "Authorization" = "b"}\n',
                     encoding="utf-8")
    cfg = load_config(given)
    written = tmp_path / "out.toml"
    written.write_text(effective_toml(cfg, show_secrets=True), encoding="utf-8")  # edge config --config in.toml --show-secrets > out.toml
    again = load_config(written)
    assert to_dict(again) == to_dict(cfg)
    assert again.sinks.webhook.headers == {"X.Api-Key": "a", "Authorization": "b"}
    assert '"X.Api-Key" = "a"' in written.read_text(encoding="utf-8")
    tomllib.loads(written.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- byte-order mark

def test_a_utf8_config_saved_with_a_byte_order_mark_loads(tmp_path):
    p = tmp_path / "notepad.toml"
    p.write_bytes("\ufeff[alert]\nmin_faces = 3\n".encode("utf-8"))
    assert load_config(p).alert.min_faces == 3


def toml_error(tmp_path, text: str) -> str:
    p = tmp_path / "store.toml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "store.toml is not valid TOML" in str(err.value) and "(at line 2, column " in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("text", ["[mood]\nscore = change\n",  # text without quotes
                                  "[status]\nenabled = True\n", '[source]\npath = "a.avi\n',  # a quote missing
                                  '[status]\nalert_advice = "Don\u2019t wait\n',  # and a curly apostrophe, no quote
                                  "[alert]\n[alert]\n"])
def test_a_toml_mistake_names_its_line_and_what_to_write(tmp_path, text):
    """tomllib's "Invalid value (at line 2, column 9)" was all a hand-edited `score = change` got."""
    assert toml_error(tmp_path, text).endswith("fix that line (text goes in double quotes, true and false in lower "
                                               "case, a list in [ ], each [table] and each key once).")


@pytest.mark.parametrize("text", ['[status]\ntoken = \u201cabcdefghijklmnopqrstuvwx\u201d\n',  # pasted from an e-mail
                                  "[sinks.command]\nargv = [\u2018/usr/local/bin/notify\u2019]\n"])
def test_curly_quotes_from_an_e_mail_are_named_not_called_missing_quotes(tmp_path, text):
    """"text goes in double quotes" was all a line that looks quoted got."""
    assert toml_error(tmp_path, text).endswith("fix that line (its value is in typographic quotes, as a word processor "
                                               "or an e-mail puts them: retype them as the keyboard's straight double "
                                               "quotes).")


def test_a_config_saved_in_another_encoding_names_the_line(tmp_path):
    """The byte's offset was all it said; nano shows lines (Windows-1252's ä in a store's name)."""
    p = tmp_path / "ansi.toml"
    p.write_bytes("# till 3\n# the queue\n\ndevice_name = \"Bäckerei\"\n".encode("cp1252"))
    with pytest.raises(ConfigError, match=r"ansi\.toml is not UTF-8 text \(bad byte on line 4\); save it as UTF-8\."):
        load_config(p)


# ---------------------------------------------------------------------------- a power cut while it was saved

@pytest.mark.parametrize("data, says", [
    (b"", "is empty (0 bytes)"),  # was run on the defaults: "No source given", and the doctor said it loads
    (b"\0" * 700, "holds NUL bytes from line 1"),  # was "Invalid statement (at line 1, column 1)"
    (b'device_name = "till-3"\n[source]\ncamera = 0\n' + b"\0" * 300, "holds NUL bytes from line 4"),
])
def test_a_config_a_power_cut_left_empty_or_zeroed_says_so(tmp_path, data, says):
    p = tmp_path / "config.toml"
    p.write_bytes(data)
    with pytest.raises(ConfigError, match=rf"config.toml {re.escape(says)}, as a power cut .* restore it from a copy"):
        load_config(p)
    r = run_cli("run", "--config", p, "--camera", "0")
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
    (tmp_path / "comment.toml").write_text("# the defaults\n")  # what a person writes loads
    assert load_config(tmp_path / "comment.toml").alert.min_faces == load_config(None).alert.min_faces


def test_a_camera_down_time_shorter_than_two_frames_is_refused():
    """Every gap between frames would have read as camera down and up again (events to every sink)."""
    with pytest.raises(ConfigError, match=r"source\.down_after_s.*at least two frame intervals at source\.fps = 0\.2 "
                                          r"\(10 s\), e\.g\. 10"):
        load_config(None, {"source.fps": 0.2})
    assert load_config(None, {"source.fps": 0.2, "source.down_after_s": 10.0}).source.down_after_s == 10.0


def test_a_camera_beside_a_path_says_the_path_is_ignored(tmp_path, caplog):
    """A bundle's config names camera = 0; a store that fills in `path` beside it got "Cannot open
    camera 0" and no word about the path (found in a review)."""
    path = tmp_path / "pi.toml"
    path.write_text('[source]\ncamera = 0\npath = "rtsp://admin:pw@cam.local/stream1"\n', encoding="utf-8")
    with caplog.at_level("WARNING", logger="edge.config"):
        load_config(path)
    (said,) = [r.getMessage() for r in caplog.records]
    assert "camera = 0 and path" in said and "path ignored" in said and "delete the camera line" in said
    assert "pw" not in said  # the camera's password stays out of the journal
    caplog.clear()
    with caplog.at_level("WARNING", logger="edge.config"):
        load_config(path, {"source.path": "/tmp/queue.mp4"})  # the command line's source replaces both
        load_config(None, {"source.camera": 0})
    assert not caplog.records
    r = run_cli("doctor", "--config", path)
    assert "WARN  source" in r.stdout and "path ignored" in r.stdout


@pytest.mark.parametrize("key, value, says", [
    ("sinks.webhook.url", "http://user:SECRETPW@[fe80::1/x", "Invalid IPv6 URL"),  # was a traceback at start
    ("sinks.webhook.url", "http://hooks.local:80a/hook", "Port could not be cast"),  # was retried for good
    ("sinks.webhook.url", "http://hooks.local:99999/hook", "Port out of range"),
    ("sinks.webhook.url", "http:///hook", "with a host"),
    ("sinks.webhook.url", "http://hooks example.com/x", "no spaces"),
    ("sinks.mqtt.host", "mqtt://broker.local:1883", "without scheme or port (the port is sinks.mqtt.port)"),
    ("sinks.mqtt.host", "broker.local:1883", "without scheme or port"),
    ("source.path", "file:///home/pi/queue.mp4", "without file://"),  # read as a stream that never ends
    ("source.path", "rtsp://admin:SECRETPW@cam.local:55a/stream1", "an rtsp:// URL with a host"),
])
def test_an_address_that_cannot_work_is_refused_when_the_config_loads(key, value, says):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        load_config(None, {key: value})
    assert says in str(e.value) and "SECRETPW" not in str(e.value)


@pytest.mark.parametrize("key, value", [("sinks.webhook.url", "http://[fe80::1]:8080/hook"),
                                        ("sinks.webhook.url", "https://user:pw@hooks.example.com/services/T0/B0/X"),
                                        ("sinks.mqtt.host", "fd00::5"), ("sinks.mqtt.host", "10.0.0.7"),
                                        ("sinks.mqtt.host", "broker.local"), ("source.path", "rtsp://cam.local:554/s1"),
                                        ("source.path", "http://cam.local/video.mjpg")])
def test_good_addresses_load(key, value):
    load_config(None, {key: value})


def test_a_config_that_is_a_pipe_is_named_as_one(tmp_path):
    """A named pipe or a shell's <(...) was "a link to a file that does not exist" (found in a review)."""
    import os

    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"config\.toml is not a regular file \(a pipe or a device\); save it as a file"):
        load_config(fifo)


def test_a_bad_value_given_as_a_flag_is_named_by_the_flag():
    """`edge run --threads 0` named 'model.threads', a key the user never typed (found in a review)."""
    for args, says in ((["--threads", 0], "--threads (config key model.threads) has the bad value 0"),
                       (["--camera", -1], "--camera (config key source.camera) has the bad value -1")):
        r = run_cli("run", *args, "--max-frames", 1)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("line, says", [
    ('[source]\nfps = "15"', "'source.fps' has the bad value '15'; expected a number (without quotes: 15)."),
    ('[source]\ncamera = "0"', "'source.camera' has the bad value '0'; expected an integer (without quotes: 0)."),
    ('[source]\nrealtime = "true"', "'source.realtime' has the bad value 'true'; expected true or false (without "
                                     "quotes: true)."),
    ('[source]\nrealtime = 1', "'source.realtime' has the bad value 1; expected true or false."),
    ('[status]\nenabled = "yes"', "'status.enabled' has the bad value 'yes'; expected true or false."),
    ('[source]\npath = ["a.avi"]', "'source.path' has the bad value ['a.avi']; expected a string in quotes."),
    ('device_name = 5', "'device_name' has the bad value 5; expected a string in quotes."),
    ('[model]\nthreads = 2.5', "'model.threads' has the bad value 2.5; expected an integer."),
])
def test_a_value_of_the_wrong_type_is_named_in_the_files_words(tmp_path, line, says):
    """`fps = "15"` was "expected float" and `realtime = 1` "expected bool": Python's words, and no
    word that the quotes were what was wrong."""
    path = tmp_path / "config.toml"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"Config key {says}"



def test_a_config_path_with_an_unset_environment_variable_says_so_at_load(tmp_path, shipped_model, monkeypatch):
    """expandvars leaves an unset $VAR as it is written: the path was taken from the config's
    folder and only said not to exist, later, with nothing about the variable."""
    monkeypatch.delenv("QM_TEST_MODELS", raising=False)
    cfg = tmp_path / "store.toml"
    cfg.write_text('[model]\npath = "$QM_TEST_MODELS/model_int8.tflite"\n')
    for command in (("config",), ("run", "--source", "x.mp4")):
        proc = run_cli(*command, "--config", cfg)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == (
            "error: Config key 'model.path' uses the environment variable QM_TEST_MODELS, which is not set here "
            "('$QM_TEST_MODELS/model_int8.tflite'); set it where edge runs (for the service, an Environment= line in "
            "its unit) or write the path out."), proc.stderr
    monkeypatch.setenv("QM_TEST_MODELS", str(shipped_model.parent))
    assert config.resolve_model(load_config(cfg)) == shipped_model
    cfg.write_text('[model]\npath = "${QM_TEST_MODELS}/model_int8.tflite"\n')  # the braced form too
    assert config.resolve_model(load_config(cfg)) == shipped_model
    # a secret is no path: a $ in a password is a character of it
    cfg.write_text('[status]\npassword = "pa$sw0rd!"\n')
    assert load_config(cfg).status.password == "pa$sw0rd!"
    # a URL is no path: a $ in its password stays as written
    assert load_config(None, {"source.path": "rtsp://cam:pa$word@10.0.0.9/live"}).source.path.endswith("pa$word@10.0.0.9/live")


# ---------------------------------------------------------------------------- keys their mode does not read

def unread(text: str, tmp_path, overrides: dict | None = None) -> list[str]:
    path = tmp_path / "store.toml"
    path.write_text(text)
    said: list[str] = []
    load_config(path, overrides, unread=said)
    return said


@pytest.mark.parametrize("text, key, reads, now", [
    ("[mood]\nmin_confidence = 0.6\n", "mood.min_confidence", 'with mood.score = "votes"', 'mood.score is "change"'),
    ('[mood]\nscore = "votes"\nunhappy_above = 0.8\n', "mood.unhappy_above", 'with mood.score = "change"',
     'mood.score is "votes"'),
    ("[source]\ncamera = 0\nrealtime = true\n", "source.realtime", "for a recording", "the source is a camera"),
    ('[source]\npath = "rtsp://cam.local/live"\nfocus_m = 2.5\n', "source.focus_m", "for a Pi camera",
     "the source is a stream"),
    ('[source]\npath = "queue.mp4"\nmains_hz = 50\n', "source.mains_hz", "for a Pi camera", "the source is a recording"),
    ('[source]\npath = "queue.mp4"\nwait_for_camera = true\n', "source.wait_for_camera", "for a camera or a stream",
     "the source is a recording"),
    ('[detector]\nkind = "haar"\nmin_score = 0.65\n', "detector.min_score", 'with detector.kind "blazeface"',
     'detector.kind is "haar"'),
    ('[status]\nuser = "boss"\n', "status.user", "with status.password set", "status.password is empty"),
    ('[source]\npath = "rtsp://cam.local/live"\nrealtime = true\n', "source.realtime", "for a recording",
     "the source is a stream"),
    ('[source]\npath = "rtsp://cam.local/live"\nmains_hz = 50\n', "source.mains_hz", "for a Pi camera",
     "the source is a stream"),
    ('[source]\npath = "queue.mp4"\ndown_after_s = 30\n', "source.down_after_s", "for a camera or a stream",
     "the source is a recording"),
    ("[tracking]\nrefind_s = 3\nrefind_similarity = 0.8\n", "tracking.refind_similarity",
     "with tracking.refind_s above tracking.max_gap_s", "tracking.refind_s is 3 and max_gap_s 3"),  # refind off at max_gap_s
    ("[schedule]\nflip_in_turn = false\nflip_both_share = 0.3\n", "schedule.flip_both_share",
     "with schedule.flip_in_turn = true", "schedule.flip_in_turn is false"),
    ("[mood]\nbaseline_s = 300\n", "mood.baseline_s", "with mood.baseline_rise above 0", "mood.baseline_rise is 0"),
    # a recording keeps its own frame size: asked of a video file or image folder, width and height did nothing
    ('[source]\npath = "queue.mp4"\nwidth = 1280\n', "source.width", "for a camera or a stream",
     "the source is a recording"),
    ('[source]\npath = "images"\nheight = 960\n', "source.height", "for a camera or a stream",
     "the source is a recording"),
])
def test_a_key_set_where_its_mode_does_not_read_it_is_named_with_the_mode_that_does(tmp_path, text, key, reads, now):
    """min_confidence = 0.6 with the score "change" did nothing, and nothing said so."""
    (said,) = unread(text, tmp_path)
    assert said.startswith(f"Config key '{key}' = ") and f"is read only {reads}" in said and f"but {now}" in said


def test_a_key_its_mode_reads_or_at_its_default_or_given_as_a_flag_is_not_named(tmp_path):
    assert unread('[mood]\nscore = "votes"\nmin_confidence = 0.6\n', tmp_path) == []  # its mode
    assert unread("[mood]\nmin_confidence = 0.4\nunhappy_above = 1.0\n", tmp_path) == []  # the defaults
    assert unread('[detector]\nkind = "haar"\nmin_score = 0.5\n', tmp_path) == []  # haar's default
    assert unread("[source]\nrealtime = true\n", tmp_path) == []  # no source yet: edge run --camera/--source gives it
    assert unread("[source]\nwait_for_camera = true\nfocus_m = 2.5\n", tmp_path) == []  # nor a camera's keys
    assert unread("[source]\ncamera = 0\n", tmp_path, {"source.realtime": True}) == []  # a flag, not the file
    assert unread("[source]\ncamera = 0\nwidth = 1280\nheight = 960\n", tmp_path) == []  # a camera's size
    assert unread('[source]\npath = "rtsp://cam.local/live"\nwidth = 1280\n', tmp_path) == []  # a stream's, checked
    # an image folder's media rate, which a video file ignores: a path not found here is not judged
    assert unread('[source]\npath = "queue.mp4"\nfps = 30\n', tmp_path) == []


def test_a_frame_rate_set_for_a_video_file_is_named_and_for_an_image_folder_is_not(tmp_path):
    """A video file keeps its own rate: fps = 30 beside one did nothing, and nothing said so."""
    (tmp_path / "queue.mp4").write_bytes(b"")
    (tmp_path / "images").mkdir()
    (said,) = unread('[source]\npath = "queue.mp4"\nfps = 30\n', tmp_path)
    assert said.startswith("Config key 'source.fps' = 30.0 is read only for a camera, a stream or an image folder, "
                           f"but {tmp_path / 'queue.mp4'} is a video file, which keeps its own frame rate"), said
    assert unread('[source]\npath = "images"\nfps = 2\n', tmp_path) == []
    (tmp_path / "queue.jpg").write_bytes(b"")  # one image: not a video, though fps is not read either
    (said,) = unread('[source]\npath = "queue.jpg"\nfps = 30\n', tmp_path)
    assert f"but {tmp_path / 'queue.jpg'} is one image, a single frame: it has no effect" in said, said
    assert unread('[source]\ncamera = 0\nfps = 30\n', tmp_path) == []
    assert unread('[source]\npath = "rtsp://cam.local/live"\nfps = 10\n', tmp_path) == []


@pytest.mark.parametrize("overrides", [{}, {"source.camera": 0}, {"source.path": "queue.mp4"},
                                       {"source.path": "rtsp://cam.local/live"}])
def test_the_shipped_example_config_names_no_unread_key_whatever_the_source(tmp_path, overrides):
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "deploy" / "config.example.toml"
    said: list[str] = []
    load_config(example, overrides, unread=said)  # every key at its default
    assert said == []


def test_every_key_with_a_mode_is_a_config_key():
    cfg = config.Config()
    for key in config.MODE_KEYS:
        table, name = key.split(".")
        assert hasattr(getattr(cfg, table), name), key


def test_edge_config_and_doctor_name_a_key_the_mode_does_not_read(tmp_path):
    from edge.ops.doctor.config import check_config
    from edge.ops.doctor.context import OK, WARN, DoctorSettings, _Context

    path = tmp_path / "store.toml"
    path.write_text("[mood]\nmin_confidence = 0.6\n")
    r = run_cli("config", "--config", path)
    assert r.returncode == 0 and tomllib.loads(r.stdout)["mood"]["min_confidence"] == 0.6  # warned, not refused
    # one line, marked as a warning (it had no mark: logging is not set up for edge config)
    (said,) = r.stderr.splitlines()
    assert said.startswith("warning: Config key 'mood.min_confidence' = 0.6 is read only with mood.score = \"votes\""), said
    ctx = _Context(DoctorSettings(config=str(path)))
    check_config(ctx)
    rows = [(c.name, c.status) for c in ctx.checks]
    assert rows == [("config", OK), ("config key", WARN)] and "mood.min_confidence" in ctx.checks[1].detail


def test_edge_run_names_a_key_the_mode_does_not_read_once_in_its_startup_log(tmp_path, vga_video):
    cfg = tmp_path / "store.toml"
    cfg.write_text(f'[source]\npath = "{vga_video}"\nreopen_max_backoff_s = 10.0\n[status]\nenabled = false\n')
    r = run_cli("run", "--config", cfg, "--max-frames", 2, env={"HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if "'source.reopen_max_backoff_s'" in line]
    assert len(lines) == 1 and "WARNING" in lines[0] and "the source is a recording" in lines[0], r.stderr


@pytest.mark.slow
def test_edge_analyze_names_a_key_the_config_does_not_read_on_stderr(tmp_path, vga_video):
    """edge analyze --config loaded the same file as edge config and said nothing of a key it ignores."""
    cfg = tmp_path / "store.toml"
    cfg.write_text('[source]\npath = "queue.mp4"\nwidth = 1280\n[mood]\nmin_confidence = 0.6\n')
    r = run_cli("analyze", vga_video, "--config", cfg, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    said = [line for line in r.stderr.splitlines() if "Config key" in line]
    assert [line.split("'")[1] for line in said] == ["source.width", "mood.min_confidence"], r.stderr
    assert all(line.startswith("warning: Config key '") for line in said)
    cfg.write_text('[source]\ncamera = 0\nwidth = 1280\n[mood]\nscore = "votes"\nmin_confidence = 0.6\n')
    r = run_cli("analyze", vga_video, "--config", cfg, "--out", tmp_path / "out")  # each read in its mode
    assert r.returncode == 0 and "warning:" not in r.stderr, r.stderr


def test_edge_bundle_notes_a_key_the_pi_would_not_read(tmp_path):
    """A store's config bundled with a key its mode ignores shipped without a word; a file that names
    no source is judged with the camera 0 the bundle gives it."""
    from edge.ops.bundle import _load_bundle_config

    def notes(text: str) -> list[str]:
        (tmp_path / "store.toml").write_text(text)
        said: list[str] = []
        _load_bundle_config(str(tmp_path / "store.toml"), said)
        return [n for n in said if n.startswith("Config key")]

    (note,) = notes("[mood]\nmin_confidence = 0.6\n")
    assert note.startswith("Config key 'mood.min_confidence' = 0.6 is read only with mood.score") and note.endswith(".")
    (note,) = notes("[source]\nrealtime = true\n")  # no source: camera 0, which plays no recording
    assert "'source.realtime'" in note and "but the source is a camera" in note
    assert notes("[source]\ncamera = 0\nwait_for_camera = true\nwidth = 1280\n") == []
    assert notes('[mood]\nscore = "votes"\nmin_confidence = 0.6\n') == []
    # a USB camera by a name only the Pi has: a camera there, not a recording (width is read, realtime not)
    by_id = "/dev/v4l/by-id/usb-no-such-camera-on-this-machine-video-index0"
    (note,) = notes(f'[source]\npath = "{by_id}"\nwidth = 1280\ndown_after_s = 20.0\nrealtime = true\n')
    assert "'source.realtime'" in note and "but the source is a camera" in note

def test_a_usb_camera_says_once_that_the_pi_camera_settings_do_nothing(monkeypatch, caplog):
    """camera = 0 may be a Pi camera or a USB one, which only opening tells: a USB camera ignored
    focus_m and mains_hz without a word."""
    from edge.pipeline import sources

    monkeypatch.setattr(sources.PiCamera, "available", staticmethod(lambda index: False))
    monkeypatch.setattr(sources.OpenCVCamera, "_open", lambda self: None)
    with caplog.at_level("WARNING", logger="edge.pipeline.sources"):
        open_source(0, "", focus_m=2.5, mains_hz=50)
        boot = open_source(0, "", wait_for_camera=True, mains_hz=60)
        boot._open()
        boot._open()  # reopened after an outage: not said again
        open_source(0, "")  # nothing set: nothing to say
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said
    assert said[0].startswith("Camera 0 is a USB camera") and "focus_m = 2.5 and mains_hz = 50" in said[0]
    assert "[source] mains_hz = 60 is read by a Pi camera only" in said[1]
