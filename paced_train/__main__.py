"""``python -m paced_train`` is ``python -m paced_train.run``."""
from paced_train.run import main

if __name__ == "__main__":
    raise SystemExit(main())
