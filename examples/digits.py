"""Train an MLP on the digits with eggroll.ES: python/eggroll/demo.py (= python -m eggroll demo)."""
from eggroll.demo import main
raise SystemExit(main())
