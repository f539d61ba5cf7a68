"""Raw-data I/O: fastMRI HDF5 read/write, ISMRMRD header, fastMRI+ annotations, NIfTI export and read,
NumPy and DICOM image volumes."""
