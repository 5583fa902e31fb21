"""`python -m stjax.compile_only`: the sizing CLI, kept at its documented name (code: stjax.perf.compile_only)."""

if __name__ == "__main__":
  from stjax.perf.compile_only import main

  main()
