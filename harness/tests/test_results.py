"""Host-side tests of harness/results.py (the boot verdict)."""
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import results  # noqa: E402

LIST = """# comment
a/one   10 all      one
a/two   10 mteperm  two
a/three 10 nomteperm three
"""


def console(tap, dmesg="[    0.0] Booting Linux\n", finished=True):
    text = "[    0.1] early boot noise\n" + "".join(f"NTA: {t}\n" for t in tap)
    if finished:
        text += f"NTA-DMESG-BEGIN\n{dmesg}NTA-DMESG-END\n"
    return text


class Judge(unittest.TestCase):
    def setUp(self):
        fd, self.list = tempfile.mkstemp()
        with os.fdopen(fd, "w") as f:
            f.write(LIST)
        self.expected = results.expected_tests(self.list, "mteperm")

    def tearDown(self):
        os.unlink(self.list)

    def failed(self, checks):
        return [name for ok, name, _ in checks if not ok]

    def test_expected_follows_profile(self):
        self.assertEqual(self.expected, ["a/one", "a/two"])
        self.assertEqual(results.expected_tests(self.list, "nomteperm"), ["a/one", "a/three"])

    def test_all_pass(self):
        c = results.judge(console(["ok 1 a/one # 1s", "ok 2 a/two # 2s", "1..2"]),
                          "mteperm", self.expected)
        self.assertEqual(self.failed(c), [])

    def test_failure_is_reported(self):
        c = results.judge(console(["ok 1 a/one", "not ok 2 a/two # exit 1", "1..2"]),
                          "mteperm", self.expected)
        self.assertEqual(self.failed(c), ["mteperm/a/two"])

    def test_skip_of_required_test_fails(self):
        c = results.judge(console(["ok 1 a/one # SKIP 0s", "ok 2 a/two", "1..2"]),
                          "mteperm", self.expected)
        self.assertEqual(self.failed(c), ["mteperm/a/one"])
        c = results.judge(console(["ok 1 a/one # SKIP 0s", "ok 2 a/two", "1..2"]),
                          "mteperm", self.expected, allow_skip=["a/one"])
        self.assertEqual(self.failed(c), [])

    def test_missing_test_fails(self):
        c = results.judge(console(["ok 1 a/one", "1..1"]), "mteperm", self.expected)
        self.assertEqual(self.failed(c), ["mteperm/a/two"])

    def test_unfinished_boot_fails(self):
        c = results.judge(console(["ok 1 a/one"], finished=False), "mteperm", self.expected)
        self.assertIn("mteperm/boot", self.failed(c))

    def test_kernel_splats_fail(self):
        for splat in ["[  1.0] WARNING: CPU: 0 PID: 1 at arch/arm64/kvm/mmu.c:1 x+0x0/0x0",
                      "[  1.0] BUG: sleeping function called from invalid context",
                      "[  1.0] WARNING: possible circular locking dependency detected",
                      "[  1.0] Unable to handle kernel paging request; Internal error: Oops"]:
            c = results.judge(console(["ok 1 a/one", "ok 2 a/two", "1..2"], splat + "\n"),
                              "mteperm", self.expected)
            self.assertEqual(self.failed(c), ["mteperm/kernel-log-clean"], splat)

    def test_test_output_is_not_a_splat(self):
        c = results.judge(console(["# WARNING: a test printed this", "ok 1 a/one",
                                   "ok 2 a/two", "1..2"]), "mteperm", self.expected)
        self.assertEqual(self.failed(c), [])

    def test_known_failure_counts_and_must_keep_failing(self):
        known = {"a/two": "needs firmware QEMU lacks"}
        c = results.judge(console(["ok 1 a/one", "not ok 2 a/two # exit 1", "1..2"]),
                          "mteperm", self.expected, known=known)
        self.assertEqual(self.failed(c), [])
        self.assertIn("needs firmware", [d for _, n, d in c if n == "mteperm/a/two"][0])
        c = results.judge(console(["ok 1 a/one", "ok 2 a/two", "1..2"]),
                          "mteperm", self.expected, known=known)
        self.assertEqual(self.failed(c), ["mteperm/a/two"])

    def test_kunit_required_when_asked(self):
        c = results.judge(console(["ok 1 a/one", "ok 2 a/two", "1..2"]), "mteperm",
                          self.expected, kunit=True, ktree="/nonexistent")
        self.assertEqual(self.failed(c), ["mteperm/kunit"])


if __name__ == "__main__":
    unittest.main()
