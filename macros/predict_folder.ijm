// deepseg: segment every image in a folder and save the label images.
//
// Arguments (getArgument(), key=value, [brackets] around values with spaces):
//   input=<folder of images>  output=<folder for label images>  model=<model folder>
//   tile=<tile size, 0 = model default>  overlap=<0..0.9, default 0.25>  tta (flag: test-time augmentation)
// Run:  deepseg macro macros/predict_folder.ijm --args input=/data/images output=/data/labels model=/models/nuclei
// In Fiji: Plugins > Macros > Run..., or run("Run...", "path=...") with the arguments in a macro.

args = getArgument();
input = call("ij.Macro.getValue", args, "input", "");
output = call("ij.Macro.getValue", args, "output", "");
model = call("ij.Macro.getValue", args, "model", "");
tile = call("ij.Macro.getValue", args, "tile", "0");
overlap = call("ij.Macro.getValue", args, "overlap", "0.25");
tta = "";
if (matches(" " + args + " ", ".* tta .*"))
	tta = " tta";
if (input == "" || output == "" || model == "")
	exit("predict_folder.ijm needs input=<folder> output=<folder> model=<model folder>; got: " + args);
if (!File.isDirectory(input))
	exit("input folder not found: " + input);
if (!endsWith(input, File.separator)) input = input + File.separator;
if (!endsWith(output, File.separator)) output = output + File.separator;
File.makeDirectory(output);

setBatchMode(true);
files = getFileList(input);
done = 0;
for (i = 0; i < files.length; i++) {
	name = files[i];
	lower = toLowerCase(name);
	if (!(endsWith(lower, ".tif") || endsWith(lower, ".tiff") || endsWith(lower, ".png")))
		continue;
	open(input + name);
	source = getTitle();
	stem = File.nameWithoutExtension;
	run("DeepSeg Predict...", "model=[" + model + "] image=[" + source + "] tile=" + tile + " overlap=" + overlap + " output=labels" + tta);
	saveAs("Tiff", output + stem + ".tif");
	close("*");
	done++;
	showProgress(i + 1, files.length);
}
print("deepseg: " + done + " label image(s) written to " + output);
