from polypseg.cli import main

raise SystemExit(main())
