from ymir_dropbox.cli import main

raise SystemExit(main())
