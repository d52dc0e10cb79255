"""Host-side tests of harness/benchreport.py (the benchmark's tables)."""
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


class Report(unittest.TestCase):
    def raw(self, text):
        fd, path = tempfile.mkstemp(suffix=".csv")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        return path

    def test_median_and_spread(self):
        s = benchreport.summarise(benchreport.load(self.raw(RAW)))
        self.assertEqual(s[("fault", "nta-file", 64, "ns_per_page")], (110.0, 100.0, 130.0, 3))
        self.assertEqual(benchreport.cell(s, ("fault", "nta-file", 64, "ns_per_page")),
                         "110 (100-130)")
        self.assertEqual(benchreport.cell(s, ("fault", "nta-file", 1, "ns_per_page")), "n/a")

    def test_tables_show_ratios_and_memory(self):
        text = benchreport.tables(benchreport.summarise(benchreport.load(self.raw(RAW))))
        # nta-file / file-mte-off = 110 / 55, nta-file / tagged-anon = 110 / 220
        self.assertIn("| 64 | 110 (100-130) | 220 | 55 | n/a | n/a | 2.00 | 0.50 |", text)
        # copy: 4 MiB file + 8.5 added; map: 4 + 0.5; copy / map = 4.00
        self.assertIn("| 4 | 40.0 | 10.0 | 4.00 | n/a | n/a | 12 | 4 | 8 |", text)
        self.assertIn("| sea | 16 | 100 | 300 | 3.00 | n/a |", text)

    def test_bad_input_is_refused(self):
        with self.assertRaisesRegex(ValueError, "malformed row"):
            benchreport.load(self.raw("fault,nta-file,64,0,ns_per_page\n"))
        with self.assertRaisesRegex(ValueError, "no measurements"):
            benchreport.load(self.raw("question,case,param,rep,metric,value\n"))
        self.assertEqual(benchreport.main([self.raw(""), tempfile.mkdtemp()]), 1)


if __name__ == "__main__":
    unittest.main()
