"""The static Rego shipped in every bundle (a package only so wheels carry the .rego files)."""
