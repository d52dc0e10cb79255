"""Host-side tests of harness/benchreport.py (the benchmark's tables)."""
import contextlib
import io
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import benchreport  # noqa: E402

RAW = """question,case,param,rep,metric,value
fault,nta-file,64,0,ns_per_page,100.0
fault,nta-file,64,1,ns_per_page,130.0
fault,nta-file,64,2,ns_per_page,110.0
fault,file-mte-off,64,0,ns_per_page,55.0
fault,tagged-anon,64,0,ns_per_page,220.0
startup,copy,4,0,first_insn_ms,40.0
startup,map,4,0,first_insn_ms,10.0
startup,copy,4,0,anon_mib,8.5
startup,map,4,0,anon_mib,0.5
tag,sea,16,0,fault_ns_per_page,100
tag,sea,16,0,tag_ns_per_page,300
"""

# A run with the block-mapped cases: nta-file-2m next to the hugetlb cases,
# map-2m next to copy and map, and the 256 MiB point the target is about.
RAW_2M = """question,case,param,rep,metric,value
fault,nta-file,64,0,ns_per_page,30000.0
fault,tagged-anon,64,0,ns_per_page,27000.0
fault,file-mte-off,64,0,ns_per_page,30000.0
fault,nta-file-2m,64,0,ns_per_page,1000.0
fault,nta-file-2m,64,1,ns_per_page,1100.0
fault,nta-file-2m,64,2,ns_per_page,1050.0
fault,tagged-hugetlb,64,0,ns_per_page,1000.0
fault,hugetlb-mte-off,64,0,ns_per_page,400.0
startup,copy,256,0,first_insn_ms,127.0
startup,copy,256,1,first_insn_ms,127.0
startup,map,256,0,first_insn_ms,1.5
startup,map-2m,256,0,first_insn_ms,1.6
startup,map-2m,256,1,first_insn_ms,1.8
startup,copy,256,0,touch_ms,10.0
startup,copy,256,1,touch_ms,10.0
startup,map,256,0,touch_ms,2000.0
startup,map-2m,256,0,touch_ms,30.0
startup,map-2m,256,1,touch_ms,11.0
startup,map-2m,256,2,touch_ms,11.5
startup,copy,256,0,anon_mib,512.0
startup,map,256,0,anon_mib,0.0
startup,map-2m,256,0,anon_mib,0.1
startup,copy,256,0,rss_file_mib,0.0
startup,map,256,0,rss_file_mib,512.0
startup,map-2m,256,0,rss_file_mib,512.0
startup,copy,1,0,touch_ms,6.0
startup,map-2m,1,0,touch_ms,7.0
tag,sea,16,0,fault_ns_per_page,100
tag,sea,16,0,tag_ns_per_page,300
"""


class Report(unittest.TestCase):
    def raw(self, text):
        fd, path = tempfile.mkstemp(suffix=".csv")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        return path

    def summary(self, text):
        return benchreport.summarise(benchreport.load(self.raw(text)))

    def test_median_and_spread(self):
        s = self.summary(RAW)
        self.assertEqual(s[("fault", "nta-file", 64, "ns_per_page")], (110.0, 100.0, 130.0, 3))
        self.assertEqual(benchreport.cell(s, ("fault", "nta-file", 64, "ns_per_page")),
                         "110 (100-130)")
        self.assertEqual(benchreport.cell(s, ("fault", "nta-file", 1, "ns_per_page")), "n/a")

    def test_tables_show_ratios_and_memory(self):
        text = benchreport.tables(self.summary(RAW))
        # nta-file / file-mte-off = 110 / 55, nta-file / tagged-anon = 110 / 220;
        # no nta-file-2m or hugetlb cases in this run
        self.assertIn("| 64 | 110 (100-130) | 220 | 55 | n/a | n/a | n/a | 2.00 | 0.50 | n/a |",
                      text)
        # copy: 4 MiB file + 8.5 added; map: 4 + 0.5; copy / map = 4.00; no map-2m
        self.assertIn("| 4 | 40.0 | 10.0 | n/a | 4.00 | n/a | 12 | 4 | n/a | 8 | n/a |", text)
        self.assertIn("| 4 | n/a | n/a | n/a | n/a | n/a |", text)
        self.assertIn("| 4 | 8.5 | 0.5 | n/a | n/a | n/a | n/a |", text)
        self.assertIn("| sea | 16 | 100 | 300 | 3.00 | n/a |", text)
        self.assertIn("Not measured: no 256 MiB point", text)

    def test_block_mapped_cases(self):
        text = benchreport.tables(self.summary(RAW_2M))
        header = [line for line in text.splitlines() if line.startswith("| pages |")][0]
        self.assertIn("| nta-file-2m | tagged-hugetlb |", header)
        self.assertTrue(header.endswith("| nta-file-2m / tagged-hugetlb |"), header)
        # nta-file-2m: median 1050 of 1000-1100; / tagged-hugetlb 1000 = 1.05
        self.assertIn("| 64 | 30000 | 27000 | 30000 | 1050 (1000-1100) | 1000 | 400 "
                      "| 1.00 | 1.11 | 1.05 |", text)
        # first insn: copy / map = 127 / 1.5, copy / map-2m = 127 / 1.7;
        # host MiB: 256 + 512, 256 + 0, 256 + 0.1; saved 512 and 512 (511.9)
        self.assertIn("| 256 | 127.0 | 1.5 | 1.7 (1.6-1.8) | 84.67 | 74.71 "
                      "| 768 | 256 | 256 | 512 | 512 |", text)
        # reading it all: map / copy = 2000 / 10, map-2m / copy = 11.5 / 10
        self.assertIn("| 256 | 10.0 | 2000.0 | 11.5 (11.0-30.0) | 200.00 | 1.15 |", text)
        self.assertIn("| 1 | 6.0 | n/a | 7.0 | n/a | 1.17 |", text)
        self.assertIn("| 256 | 512.0 | 0.0 | 0.1 | 0.0 | 512.0 | 512.0 |", text)
        self.assertIn("Target: reading a 256 MiB NoTagAccess-mapped image costs at most 1.2x "
                      "the THP-backed copy. Block-mapped (map-2m, 2 MiB NoTagAccess): 11.5 ms "
                      "against 10.0 ms, 1.15x: met. (map, 4 KiB NoTagAccess pages: 200.00x.)",
                      text)

    def test_target_not_met_is_said(self):
        text = benchreport.tables(self.summary(RAW_2M.replace(
            "startup,map-2m,256,2,touch_ms,11.5", "startup,map-2m,256,2,touch_ms,12.5")))
        # median 12.5 of 11, 12.5, 30: 1.25x
        self.assertIn("12.5 ms against 10.0 ms, 1.25x: not met.", text)
        self.assertNotIn(": met.", text)

    def test_plot_has_the_new_series(self):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            self.skipTest("no matplotlib here")
        out = tempfile.mkdtemp()
        with contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(benchreport.main([self.raw(RAW_2M), out]), 0)
        self.assertGreater(os.path.getsize(os.path.join(out, "bench.png")), 0)
        with open(os.path.join(out, "tables.md"), encoding="utf-8") as f:
            self.assertIn("map-2m / copy", f.read())

    def test_real_guest_layouts(self):
        raw = RAW + "".join(
            f"vm,{lay},1,{r},init_ms,{i}\nvm,{lay},1,{r},off_ms,{o}\n"
            f"vm,{lay},2,{r},pss_kib_init,{p}\nvm,{lay},2,{r},pss_anon_kib_init,{a}\n"
            f"vm,{lay},2,{r},pss_file_kib_init,{p - a}\n"
            for lay, i, o, p, a in (("copy", 1000, 4000, 40960, 40960),
                                    ("map", 1100, 4400, 30720, 20480))
            for r in (0, 1))
        text = benchreport.tables(self.summary(raw))
        self.assertIn("| copy | 1000 | 4000 | 40.0 | 40.0 | 0.0 |", text)
        self.assertIn("| map | 1100 | 4400 | 30.0 | 20.0 | 10.0 |", text)
        self.assertIn("map / copy: init 1.10, power-off 1.10, host memory of two guests 0.75",
                      text)
        self.assertNotIn("A real Linux MTE guest", benchreport.tables(self.summary(RAW)))

    def test_bad_input_is_refused(self):
        with self.assertRaisesRegex(ValueError, "malformed row"):
            benchreport.load(self.raw("fault,nta-file,64,0,ns_per_page\n"))
        with self.assertRaisesRegex(ValueError, "no measurements"):
            benchreport.load(self.raw("question,case,param,rep,metric,value\n"))
        self.assertEqual(benchreport.main([self.raw(""), tempfile.mkdtemp()]), 1)


if __name__ == "__main__":
    unittest.main()
