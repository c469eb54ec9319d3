"""`python tools/localstack` (or `python -m localstack` from tools/): run the local stack."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from localstack.stack import main

sys.exit(main())
