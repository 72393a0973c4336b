//! The mediabot engine library (work in progress).
