"""`python -m llm`: the core command line without the web platform."""

import sys

from llm.cli import main

sys.exit(main())
