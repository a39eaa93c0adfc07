def main() -> None:
    raise SystemExit("under construction")
