package deepseg.fiji;

import ij.IJ;
import ij.Macro;
import ij.Menus;
import ij.macro.Interpreter;
import ij.plugin.PlugIn;

import java.awt.GraphicsEnvironment;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.util.Hashtable;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The ImageJ 1.x plugin behind every "Plugins > deepseg" command.
 *
 * <p>ImageJ creates commands from class names, which a Python object cannot have, so this class
 * forwards {@code run(arg)} to the {@link CommandHandler} registered for the command name
 * {@code arg}. One jar serves both ways of loading it: on the JVM class path (started from
 * Python) and in a Fiji/ImageJ {@code plugins/} folder (its {@code plugins.config} creates the
 * menu entries); the class is loaded once, so both see the same registry.
 */
public class DeepSegCommand implements PlugIn {

    /** The menu that holds the commands. */
    public static final String MENU = "Plugins>deepseg";

    private static final Map<String, CommandHandler> HANDLERS = new ConcurrentHashMap<String, CommandHandler>();
    private static volatile String lastError;
    private static final ThreadLocal<Boolean> QUIET = new ThreadLocal<Boolean>();

    /** Connects {@code command} to {@code handler} (replacing any previous handler). */
    public static void register(String command, CommandHandler handler) {
        HANDLERS.put(command, handler);
    }

    /** Disconnects every handler (the Python side is going away). */
    public static void unregisterAll() {
        HANDLERS.clear();
    }

    /** The commands that currently have a handler. */
    public static String[] commands() {
        return HANDLERS.keySet().toArray(new String[0]);
    }

    /** Returns the message of the last failed command and forgets it (null if none failed). */
    public static String takeLastError() {
        String error = lastError;
        lastError = null;
        return error;
    }

    /**
     * With {@code true}, failures of commands run on this thread are only kept for
     * {@link #takeLastError()} (the Python caller raises them) instead of being shown in a dialog.
     */
    public static void setQuiet(boolean quiet) {
        if (quiet)
            QUIET.set(Boolean.TRUE);
        else
            QUIET.remove();
    }

    /** The class-name entry of {@code command} in ImageJ's command table. */
    public static String entry(String command) {
        return DeepSegCommand.class.getName() + "(\"" + command + "\")";
    }

    /**
     * Makes {@code commands} runnable by {@code IJ.run} and macros. With menus (a display), each
     * missing command is added to Plugins > deepseg; headless, where ImageJ builds no menus, the
     * command table itself is created and filled (ImageJ 1.x has no public API for that).
     *
     * @return how many commands were added
     */
    @SuppressWarnings("unchecked")
    public static int install(String[] commands) throws ReflectiveOperationException {
        Hashtable<String, String> table = commandTable();
        boolean menus = Menus.getMenuBar() != null;
        Method add = null;
        if (menus) {
            try {
                add = Menus.class.getMethod("add", String.class, String.class); // ImageJ >= 1.52s
            } catch (NoSuchMethodException e) {
                add = null;
            }
        }
        int added = 0;
        for (String command : commands) {
            if (table.containsKey(command))
                continue;
            if (add != null)
                add.invoke(null, MENU + ">" + command, entry(command));
            if (!table.containsKey(command))
                table.put(command, entry(command));
            added++;
        }
        return added;
    }

    @SuppressWarnings("unchecked")
    private static Hashtable<String, String> commandTable() throws ReflectiveOperationException {
        Hashtable<String, String> table = Menus.getCommands();
        if (table == null && !GraphicsEnvironment.isHeadless()) {
            // Older ImageJ 1.x builds the menus (and the command table) only on the first IJ.run.
            Method init = IJ.class.getDeclaredMethod("init");
            init.setAccessible(true);
            init.invoke(null);
            table = Menus.getCommands();
        }
        if (table != null)
            return table;
        Field field = Menus.class.getDeclaredField("pluginsTable");
        field.setAccessible(true);
        synchronized (Menus.class) {
            table = (Hashtable<String, String>) field.get(null);
            if (table == null) {
                table = new Hashtable<String, String>();
                field.set(null, table);
            }
        }
        return table;
    }

    @Override
    public void run(String arg) {
        String command = arg == null ? "" : arg.trim();
        CommandHandler handler = HANDLERS.get(command);
        if (handler == null) {
            fail(command, "\"" + command + "\" needs deepseg's Python engine, which is not running in this "
                    + "ImageJ. Start ImageJ from Python (fiji_bridge.start(), or `deepseg macro FILE.ijm`) "
                    + "and run the command there.");
            return;
        }
        String error;
        try {
            error = handler.run(command, Macro.getOptions());
        } catch (Throwable t) {
            error = t.toString();
        }
        if (error != null)
            fail(command, error);
    }

    /**
     * Reports a failed command the ImageJ way: a running macro is aborted with the message (the
     * macro runner reads it back); with a display the message is shown. Headless or quiet, and
     * outside a macro, the Python caller reads it with {@link #takeLastError()}.
     */
    static void fail(String command, String message) {
        lastError = message;
        IJ.showStatus("");
        IJ.showProgress(1.0);
        boolean quiet = Boolean.TRUE.equals(QUIET.get()) && Interpreter.getInstance() == null;
        if (quiet || (Interpreter.getInstance() == null && IJ.getInstance() == null && GraphicsEnvironment.isHeadless()))
            return;
        IJ.error(command, message);
    }
}
