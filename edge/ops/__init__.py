"""Operations around the runtime: doctor, bundle, offline analysis."""
