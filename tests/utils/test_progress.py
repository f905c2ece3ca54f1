import io

from clipzss_d2.utils.progress import LogProgress, progress


def test_a_log_gets_plain_lines_not_carriage_returns():
    stream = io.StringIO()  # not a TTY, like a file or a CI log
    bar = progress(range(1000), desc="miniworld CLIP", unit="step", stream=stream)
    assert isinstance(bar, LogProgress)
    bar.interval = 0.0  # a line per step here; 30 s in real use
    for i in bar:
        if i == 999:
            bar.set_postfix(loss="0.916")
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[-1].startswith("miniworld CLIP: 1000/1000 (100%) in ")
    assert lines[-1].endswith("[loss=0.916]")
    assert len(lines) == 1000  # 999 periodic lines + the closing one, each on its own line


def test_default_interval_keeps_a_log_short():
    stream = io.StringIO()
    with progress(total=50_000, desc="images", unit="img", stream=stream) as bar:
        for _ in range(50_000):
            bar.update(1)
    assert stream.getvalue().count("\n") == 1  # the closing line only (it took < 30 s)
