import sys

from ul_pipeline.cli import main

sys.exit(main())
