"""Medical Segmentation Decathlon submissions: export with the images' geometry, validate, zip."""
