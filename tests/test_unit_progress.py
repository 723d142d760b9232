from texttune.nodes.progress import EVENT, Reporter


class FakeServer:
    def __init__(self):
        self.sent = []

    def send_sync(self, event, data, sid=None):
        self.sent.append((event, data))


def test_progress_events_are_throttled_and_the_last_step_always_sent():
    r = Reporter("7", "run", min_interval=3600)
    r.server = FakeServer()
    for step in range(1, 101):
        r(step, 100, {"loss": 1.0 / step})
    events = r.server.sent
    assert [e for e, _ in events] == [EVENT, EVENT]
    assert events[0][1]["step"] == 1 and events[-1][1]["step"] == 100
    assert events[-1][1]["node"] == "7" and events[-1][1]["loss"] == 0.01
    r.close()
