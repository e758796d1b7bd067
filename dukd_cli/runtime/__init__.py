"""Process-level helpers every stage may use: thread settings (``threads``), the console script's
fast exit (``fastexit``), atomic files and writable-folder checks (``fsutil``), the Hub reachability
probe (``hubnet``).

This room imports nothing from dukd but ``dukd_cli.errors``, and never imports torch at module level.
"""
