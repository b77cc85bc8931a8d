"""`python -m farm.bench`: see farm.bench."""
import sys

from farm.bench import main

sys.exit(main())
