module faultline.dev/tests

go 1.19
