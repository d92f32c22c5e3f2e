// data/index.ts: datasets (IDX, CIFAR, image folders), batch transforms and the DataLoader (msgc.data).
export { Dataset, Sample, ArrayDataset, ArrayDatasetOptions, DataLoader, DataLoaderOptions, Batch, PreparedBatch } from './loader';
export {
  BatchData, Transform, Rng, mixSeed, permutation, imageToFloat, toFloat, padCrop, randomCrop, randomCropOffsets, RandomCropOffsets,
  flipImages, horizontalFlip, horizontalFlipMask, normalize, compose,
  FASHION_MNIST_MEAN, FASHION_MNIST_STD, MNIST_MEAN, MNIST_STD, CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD,
  IMAGENET_MEAN, IMAGENET_STD,
} from './transforms';
export {
  IdxArray, IdxValues, parseIdx, readIdx, readMaybeGzip, loadIdxDataset, IdxDatasetOptions, loadFashionMNIST, loadMNIST, MnistOptions, Split,
  searchDirs, FASHION_MNIST_CLASSES, MNIST_CLASSES,
} from './idx';
export { loadCIFAR10, loadCIFAR100, readCifarFiles, CifarFormat, CifarOptions, Cifar100Options, CIFAR10_CLASSES, CIFAR100_FINE_CLASSES, CIFAR100_COARSE_CLASSES } from './cifar';
export { loadImageFolder, listImageFolder, ImageFolderOptions, ImageFolderListing, IMAGE_EXTENSIONS, loadSharp, resizedSize, centerCropHWCtoCHW } from './imagefolder';
export { loadDataset, datasetDefaults, datasetName, DATASET_NAMES, DatasetName, LoadDatasetOptions, LoadedDataset, DatasetDefaults } from './datasets';
